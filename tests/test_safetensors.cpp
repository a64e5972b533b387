// safetensors: round trip, and rejection of malformed files with a message naming the problem.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "file_util.h"
#include "mhc/safetensors.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

std::string tmpdir() { return scratch_dir("st"); }

std::string raw_file(const std::string& name, const std::string& header, const std::string& data,
                     uint64_t hlen_override = 0) {
    const std::string path = tmpdir() + "/" + name;
    std::ofstream f(path, std::ios::binary);
    uint64_t h = hlen_override ? hlen_override : header.size();
    for (int i = 0; i < 8; i++) f.put((char)(h >> (8 * i)));
    f << header << data;
    return path;
}

void expect_rejected(const std::string& path, const std::string& fragment) {
    try {
        safetensors_read(path);
        ADD_FAILURE() << "accepted: " << path;
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "message names the file";
    }
}

TEST(Safetensors, RoundTrip) {
    SafeTensors st;
    st.metadata["config"] = "{\"n\": 4}";
    st.tensors["a.weight"] = st_from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
    st.tensors["b"] = st_from_doubles({0.5}, {});
    st.tensors["perms"] = st_from_int64({0, 1, 1, 0}, {2, 2});
    const std::string path = tmpdir() + "/rt.safetensors";
    safetensors_write(path, st);
    const SafeTensors r = safetensors_read(path);
    EXPECT_EQ(r.metadata.at("config"), "{\"n\": 4}");
    EXPECT_EQ(r.at("a.weight").shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(r.at("a.weight").to_float(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(r.at("b").to_double(), std::vector<double>{0.5});
    EXPECT_EQ(r.at("perms").to_double(), (std::vector<double>{0, 1, 1, 0}));
    EXPECT_THROW(r.at("missing"), std::runtime_error);
    // Header is padded to a multiple of 8 and nothing is left behind but the file itself.
    std::ifstream f(path, std::ios::binary);
    uint64_t h = 0;
    f.read((char*)&h, 8);
    EXPECT_EQ(h % 8, 0u);
    for (const auto& e : fs::directory_iterator(tmpdir()))
        EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Safetensors, RejectsMalformedFiles) {
    const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    const std::string data(8, '\0');
    EXPECT_NO_THROW(safetensors_read(raw_file("ok.st", ok, data)));
    expect_rejected(tmpdir() + "/does-not-exist.st", "cannot open");
    expect_rejected(raw_file("empty.st", "", ""), "not valid JSON");
    expect_rejected(raw_file("absurd.st", ok, data, 1ull << 60), "header length");
    expect_rejected(raw_file("json.st", "{not json", data), "not valid JSON");
    expect_rejected(raw_file("trunc.st", ok, std::string(4, '\0')), "truncated");
    expect_rejected(raw_file("dtype.st", R"({"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", data),
                    "unknown dtype");
    expect_rejected(raw_file("shape.st", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
                    "shape and dtype need");
    expect_rejected(raw_file("neg.st", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
                    "bad shape");
    expect_rejected(raw_file("overlap.st",
                             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                             data),
                    "overlap");
    expect_rejected(raw_file("order.st", R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data),
                    "outside the data");
    expect_rejected(raw_file("meta.st", R"({"__metadata__":{"k":1}})", ""), "not a string");
    std::ofstream(tmpdir() + "/tiny.st") << "abc";
    expect_rejected(tmpdir() + "/tiny.st", "shorter than");
}

TEST(Safetensors, FailedWriteLeavesOldFileIntact) {
    SafeTensors st;
    st.tensors["x"] = st_from_floats({1, 2}, {2});
    EXPECT_THROW(safetensors_write(tmpdir() + "/no/such/dir/x.st", st), std::runtime_error);
    // The rename fails (the target is a non-empty directory): error, the temporary file is
    // removed and what was at the target is untouched.
    const std::string target = tmpdir() + "/occupied";
    fs::create_directories(target + "/inner");
    EXPECT_THROW(safetensors_write(target, st), std::runtime_error);
    EXPECT_TRUE(fs::is_directory(target + "/inner"));
    for (const auto& e : fs::directory_iterator(tmpdir()))
        EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
