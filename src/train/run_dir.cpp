// The run directory: its files' names, config.toml, `latest`, metrics.jsonl, and the checkpoints
// (model + optimizer state + data positions), their list and pruning.
#include "train/run_dir.h"

#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "mhc/checkpoint.h"
#include "mhc/train.h"
#include "sys/file.h"

namespace mhc::run_dir {

namespace {
// DIR/ckpt_NNNNNN.optim.safetensors from DIR/ckpt_NNNNNN.safetensors.
std::string optim_path_of(const std::string& model) {
    return model.substr(0, model.size() - 12) + ".optim.safetensors";
}
}  // namespace

std::string config_path(const std::string& dir) { return dir + "/config.toml"; }
std::string metrics_path(const std::string& dir) { return dir + "/metrics.jsonl"; }

void write_config(const std::string& dir, const TrainConfig& cfg) {
    sys::write_file_atomic(config_path(dir), config_to_toml(cfg));
}

TrainConfig read_config(const std::string& dir) { return config_from_toml_file(config_path(dir)); }

std::string checkpoint_name(long step) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "ckpt_%06ld", step);
    return buf;
}

void write_latest(const std::string& dir, long step) {
    sys::write_file_atomic(dir + "/latest", checkpoint_name(step) + "\n");
}

std::string read_latest(const std::string& dir) {
    std::string text;
    if (!sys::read_file(dir + "/latest", text)) return "";
    return text.substr(0, text.find('\n'));
}

std::string latest_checkpoint(const std::string& dir) {
    const std::string name = read_latest(dir);
    return name.empty() ? "" : dir + "/" + name + ".safetensors";
}

long latest_step(const std::string& dir) {
    const std::string name = read_latest(dir);
    if (name.rfind("ckpt_", 0) != 0) return -1;
    try {
        return std::stol(name.substr(5));
    } catch (const std::exception&) {
        return -1;
    }
}

void start_metrics(const std::string& dir) { sys::write_file_atomic(metrics_path(dir), ""); }

void truncate_metrics(const std::string& dir, long step) {
    std::vector<MetricsLine> lines;
    if (!read_metrics(dir, lines)) return;
    std::string kept;
    for (const MetricsLine& l : lines) {
        try {
            if (l.rec.value("step", 0L) <= step) kept += l.text + "\n";
        } catch (const std::exception&) {
            break;  // not JSON (a torn last line from a crash), or not a record: drop it and all after
        }
    }
    sys::write_file_atomic(metrics_path(dir), kept);
}

MetricsLog::MetricsLog(const std::string& dir) : f(metrics_path(dir), std::ios::app) {
    if (!f) throw std::runtime_error(metrics_path(dir) + ": cannot open for writing");
}

void MetricsLog::append(const nlohmann::json& rec) {
    f << rec.dump() << "\n";
    f.flush();
}

bool read_metrics(const std::string& dir, std::vector<MetricsLine>& lines) {
    lines.clear();
    std::string text;
    if (!sys::read_file(metrics_path(dir), text)) return false;
    for (size_t at = 0; at < text.size();) {
        size_t nl = text.find('\n', at);
        if (nl == std::string::npos) nl = text.size();
        MetricsLine l;
        l.text = text.substr(at, nl - at);
        l.rec = nlohmann::json::parse(l.text, nullptr, false);
        lines.push_back(std::move(l));
        at = nl + 1;
    }
    return true;
}

std::string save_checkpoint(const std::string& dir, const GPT<float>& m, const AdamW<float>& opt,
                            const ResumeState& rs, const std::string& train_config_json) {
    const std::string base = dir + "/" + checkpoint_name(rs.step);
    checkpoint_save(base + ".safetensors", m, {{"step", std::to_string(rs.step)}});
    SafeTensors st;
    st.metadata = {{"step", std::to_string(rs.step)},
                   {"adam_step", std::to_string(opt.step)},
                   {"train_rng", std::to_string(rs.train.rng)},
                   {"train_next", std::to_string(rs.train.next)},
                   {"val_rng", std::to_string(rs.val.rng)},
                   {"val_next", std::to_string(rs.val.next)},
                   {"train_config", train_config_json}};
    const std::vector<float>& mm = opt.m.empty() ? std::vector<float>(m.param.size()) : opt.m;
    const std::vector<float>& vv = opt.v.empty() ? std::vector<float>(m.param.size()) : opt.v;
    st.tensors["adam.m"] = st_from_floats(mm, {(int64_t)mm.size()});
    st.tensors["adam.v"] = st_from_floats(vv, {(int64_t)vv.size()});
    st.metadata["checksum"] = tensors_checksum(st);
    safetensors_write(base + ".optim.safetensors", st);
    write_latest(dir, rs.step);
    return base + ".safetensors";
}

void load_checkpoint(const std::string& dir, GPT<float>& m, AdamW<float>& opt, ResumeState& rs) {
    const std::string ck = latest_checkpoint(dir);
    if (ck.empty()) throw std::runtime_error(dir + ": no checkpoint to resume from (no 'latest')");
    checkpoint_load(ck, m);
    const std::string optim = optim_path_of(ck);
    const SafeTensors st = safetensors_read(optim);
    checksum_verify(st);
    auto num = [&](const char* key) -> uint64_t {
        auto it = st.metadata.find(key);
        if (it == st.metadata.end()) throw std::runtime_error(optim + ": missing '" + key + "'");
        try {
            return std::stoull(it->second);
        } catch (const std::exception&) {
            throw std::runtime_error(optim + ": bad value for '" + key + "'");
        }
    };
    rs.step = (long)num("step");
    opt.step = (long)num("adam_step");
    rs.train = {num("train_rng"), (int64_t)num("train_next")};
    rs.val = {num("val_rng"), (int64_t)num("val_next")};
    for (auto [name, dst] : {std::pair{"adam.m", &opt.m}, std::pair{"adam.v", &opt.v}}) {
        const StTensor& t = st.at(name);
        if (t.dtype != DType::F32 || t.numel() != (int64_t)m.param.size())
            throw std::runtime_error(optim + ": '" + name + "' does not match the model's " +
                                     std::to_string(m.param.size()) + " parameters");
        *dst = t.to_float();
    }
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
    std::vector<std::string> models;  // ckpt_NNNNNN.safetensors, zero-padded: name order is step order
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        const std::string f = e.path().filename().string();
        if (f.rfind("ckpt_", 0) == 0 && f.size() == 23 && f.compare(11, 12, ".safetensors") == 0)
            models.push_back(e.path().string());
    }
    std::sort(models.begin(), models.end());
    return models;
}

void prune_checkpoints(const std::string& dir, int keep) {
    namespace fs = std::filesystem;
    const std::string latest = latest_checkpoint(dir);
    const std::vector<std::string> models = list_checkpoints(dir);
    for (size_t i = 0; i + keep < models.size(); i++) {
        if (models[i] == latest) continue;
        std::error_code ec;  // best effort: a file we cannot delete costs disk space, not the run
        fs::remove(models[i], ec);
        fs::remove(optim_path_of(models[i]), ec);
    }
}

void remove_stale_temporaries(const std::string& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(e.path(), ec);
}

}  // namespace mhc::run_dir

namespace mhc {

std::string run_latest_checkpoint(const std::string& dir) { return run_dir::latest_checkpoint(dir); }

}  // namespace mhc
