// Writes the seed corpora of the fuzz targets: small valid files made by the library itself, and
// near-valid ones one step from valid (truncated, one wrong field), which is where parsers break.
//   fuzz_make_seeds <repository root> <output directory>
// The output gets safetensors/, tokens/, config/ and tokenizer/ (one per target). Regenerate with
// scripts/fuzz.sh --seeds; the corpora are committed under fuzz/corpus/.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mhc/checkpoint.h"
#include "mhc/config.h"
#include "mhc/gpt.h"
#include "mhc/safetensors.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + p.string());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void put(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out << bytes;
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

// The smallest model of each variant: one block, 4 wide, vocabulary 8, context 4.
ModelConfig tiny(const std::string& type, int n, bool bias = false) {
    ModelConfig c;
    c.n_layer = 1, c.n_head = 2, c.n_embd = 4, c.vocab_size = 8, c.block_size = 4, c.bias = bias;
    c.hyper_conn_type = mhc::variant_from_string(type);
    c.hyper_conn_n = n;
    c.hyper_conn_n_set = true;
    return c;
}

// A checkpoint as mhc writes it. Without its checksum unless asked: a mutated file fails the
// checksum before anything else, so the fuzzer gets past it only from unchecksummed seeds.
std::string checkpoint_bytes(const ModelConfig& c, bool keep_checksum, const fs::path& tmp) {
    GPT<float> m;
    gpt_build(m, c);
    gpt_init(m, 1);
    SafeTensors st = checkpoint_tensors(m);
    if (!keep_checksum) st.metadata.erase("checksum");
    safetensors_write(tmp.string(), st);
    std::string bytes = slurp(tmp);
    fs::remove(tmp);
    return bytes;
}

std::string le64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; i++) s[i] = (char)(v >> (8 * i));
    return s;
}

std::string le32(uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; i++) s[i] = (char)(v >> (8 * i));
    return s;
}

std::string u16_bytes(const std::vector<uint16_t>& v) {
    std::string s;
    for (uint16_t t : v) s += (char)(t & 0xff), s += (char)(t >> 8);
    return s;
}

// An llm.c shard: 256 int32 of header (magic, version, count) then the uint16 tokens.
std::string llmc_bytes(const std::vector<uint16_t>& v, int32_t version = 1, int32_t count = -1) {
    std::string h(1024, '\0');
    const int32_t words[3] = {20240520, version, count < 0 ? (int32_t)v.size() : count};
    for (int w = 0; w < 3; w++)
        for (int i = 0; i < 4; i++) h[4 * w + i] = (char)((uint32_t)words[w] >> (8 * i));
    return h + u16_bytes(v);
}

void safetensors_seeds(const fs::path& dir) {
    const fs::path tmp = dir / "tmp.safetensors";
    const struct { const char* name; ModelConfig cfg; } models[] = {
        {"ckpt_none", tiny("none", 1)},       {"ckpt_hc_bias", tiny("hc", 2, true)},
        {"ckpt_mhc", tiny("mhc", 2)},         {"ckpt_mhc_lite", tiny("mhc_lite", 2)},
        {"ckpt_mhc_lite_n3", tiny("mhc_lite", 3)}, {"ckpt_kromhc", tiny("kromhc", 2)},
        {"ckpt_jpmhc", tiny("jpmhc", 3)},     {"ckpt_ohc", tiny("ohc", 4)},
    };
    for (const auto& [name, cfg] : models) put(dir / name, checkpoint_bytes(cfg, false, tmp));
    const std::string lite = checkpoint_bytes(tiny("mhc_lite", 2), true, tmp);
    put(dir / "ckpt_mhc_lite_checksum", lite);
    put(dir / "ckpt_truncated", lite.substr(0, lite.size() - 5));

    // Every dtype, an empty and a 0-d tensor, metadata: the reader's own ground.
    SafeTensors st;
    st.metadata["note"] = "every dtype";
    const std::pair<const char*, DType> dtypes[] = {
        {"f64", DType::F64}, {"f32", DType::F32}, {"f16", DType::F16}, {"bf16", DType::BF16},
        {"i64", DType::I64}, {"i32", DType::I32}, {"i16", DType::I16}, {"i8", DType::I8},
        {"u8", DType::U8},   {"bool", DType::BOOL}};
    for (const auto& [name, d] : dtypes) {
        StTensor t;
        t.dtype = d;
        t.shape = {2, 2};
        for (int i = 0; i < 4 * dtype_size(d); i++) t.data.push_back((uint8_t)(37 * i + 1));
        st.tensors[name] = t;
    }
    st.tensors["empty"] = st_from_floats({}, {0, 3});
    st.tensors["scalar"] = st_from_doubles({2.5}, {});
    safetensors_write(tmp.string(), st);
    put(dir / "dtypes", slurp(tmp));
    fs::remove(tmp);

    const std::string hdr = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    put(dir / "minimal", le64(hdr.size()) + hdr + std::string(8, '\1'));
    put(dir / "header_too_long", le64(hdr.size() + 100) + hdr + std::string(8, '\1'));
    const std::string two = R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
    put(dir / "overlap", le64(two.size()) + two + std::string(8, '\2'));
    const std::string meta = R"({"__metadata__":{"config":"{\"n_layer\":1}","format":"mhc-checkpoint-1"}})";
    put(dir / "metadata_only", le64(meta.size()) + meta);
}

void token_seeds(const fs::path& dir) {
    put(dir / "text.txt", "The quick brown fox jumps over the lazy dog.\nA second line.\n");
    put(dir / "u16.bin", u16_bytes({0, 1, 2, 3, 255, 256, 1000, 50303, 7, 8, 9, 10}));
    put(dir / "u16_big_token.bin", u16_bytes({1, 2, 50304, 65535}));
    put(dir / "u16_odd.bin", u16_bytes({1, 2, 3}) + "x");
    put(dir / "llmc.bin", llmc_bytes({50256, 464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290}));
    put(dir / "llmc_v2.bin", llmc_bytes({1, 2, 3}, 2));
    put(dir / "llmc_count_short.bin", llmc_bytes({1, 2, 3, 4}, 1, 3));
    put(dir / "llmc_truncated.bin", llmc_bytes({1, 2, 3, 4}, 1, 9));
    put(dir / "llmc_header_only.bin", llmc_bytes({}, 1, 0).substr(0, 1000));
    // uint32: llm.c's LLaMA-3 shard (magic 20240801, version 7) and raw u32.
    std::string h;
    for (uint32_t v : {20240801u, 7u, 3u}) h += le32(v);
    h.resize(1024, '\0');
    put(dir / "llmc_llama3.bin", h + le32(128000) + le32(9906) + le32(1917));
    put(dir / "u32.tok", le32(70000) + le32(1) + le32(65536));
}

// Tokenizer files and texts for fuzz_tokenizer: a first byte 0 = a file follows, 1 = text for the
// test fixture tests/tokenizers/tiny_bpe.json.
void tokenizer_seeds(const fs::path& root, const fs::path& dir) {
    const std::string fixture = slurp(root / "tests" / "tokenizers" / "tiny_bpe.json");
    const std::string file(1, '\0'), text(1, '\1');
    put(dir / "fixture.json", file + fixture);
    put(dir / "fixture_truncated.json", file + fixture.substr(0, fixture.size() / 2));
    put(dir / "metaspace.json", file + "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, "
                                       "\"pre_tokenizer\": {\"type\": \"Metaspace\"}}");
    std::string llmc;
    for (uint32_t v : {20240328u, 2u, 3u, 2u}) llmc += le32(v);
    llmc.resize(1024, '\0');
    llmc += std::string("\x01" "a" "\x02" " b" "\x0D" "<|endoftext|>");
    put(dir / "gpt2_tokenizer.bin", file + llmc);
    put(dir / "gpt2_tokenizer_truncated.bin", file + llmc.substr(0, llmc.size() - 3));
    put(dir / "text_english", text + "the cat's 12 cafés\n\nare  here <|endoftext|> it'll\tend. Hello world");
    put(dir / "text_unicode", text + "東京 x\xD9\xA3 a\xC2\xA0" "b \xC2\x85" "b \xF0\x9F\x98\x80 naïve");
    put(dir / "text_bytes", text + "a\xFF" "b \xE2\x82 \xC3\n\n  \t x  y   z\r\n");
}

void config_seeds(const fs::path& root, const fs::path& dir) {
    for (const char* f : {"default.toml", "mhc_lite_paper.toml"})
        put(dir / f, slurp(root / "configs" / f));
    // TOML, then NUL-separated --set overrides (see fuzz_config.cpp).
    const std::string nul(1, '\0');
    put(dir / "overrides", "n_layer = 2\nn_embd = 64\n" + nul + "hyper_conn_type=mhc" + nul +
                               "sinkhorn_iters=5" + nul + "learning_rate=.5e-3");
    put(dir / "none_type", "hyper_conn_type = \"residual\"\n" + nul + "hyper_conn_n=1");
    put(dir / "lite_subset", "hyper_conn_type = \"mhc-lite\"\nhyper_conn_n = 8\nhyper_conn_perm_subset = 24\n"
                             "hyper_conn_perm_seed = 7\n");
    put(dir / "big_seed", "seed = \"18446744073709551615\"\n" + nul + "data_order=\"sequential\"");
    put(dir / "typo", "n_embed = 128\n");
    put(dir / "written", config_to_toml(TrainConfig{}));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: fuzz_make_seeds <repository root> <output directory>\n");
        return 2;
    }
    try {
        const fs::path root = argv[1], out = argv[2];
        for (const char* t : {"safetensors", "tokens", "config", "tokenizer"}) fs::create_directories(out / t);
        safetensors_seeds(out / "safetensors");
        token_seeds(out / "tokens");
        config_seeds(root, out / "config");
        tokenizer_seeds(root, out / "tokenizer");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
        return 1;
    }
    return 0;
}
