// The run directory: its files' names, config.toml, `latest`, metrics.jsonl, and the checkpoints
// (model + optimizer state + data positions), their list and pruning.
#include "train/run_dir.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
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
std::string lock_path(const std::string& dir) { return dir + "/lock"; }

Writer take(const std::string& dir) {
    Writer w;
    w.dir = dir;
    std::error_code ec;
    w.created = !std::filesystem::exists(dir, ec);
    if (w.created && !std::filesystem::create_directories(dir, ec) && ec)
        throw std::runtime_error(dir + ": cannot create the run directory: " + ec.message());
    try {
        w.lock = sys::lock_file(lock_path(dir), dir);
    } catch (const std::exception&) {
        if (w.created) ::rmdir(dir.c_str());
        throw;
    }
    return w;
}

Writer::~Writer() {
    if (!lock.held()) return;
    lock = sys::FileLock();  // removes DIR/lock and releases it
    if (created) ::rmdir(dir.c_str());  // only if nothing else was written (rmdir needs it empty)
}

// ---- data.json ----

namespace {
std::string data_path(const std::string& dir) { return dir + "/data.json"; }
}  // namespace

void write_data_record(const std::string& dir, const nlohmann::json& rec) {
    sys::write_file_atomic(data_path(dir), rec.dump(2) + "\n");
}

nlohmann::json read_data_record(const std::string& dir) {
    std::string text;
    if (!sys::read_file(data_path(dir), text)) return nullptr;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    return j.is_object() ? j : nlohmann::json(nullptr);
}

std::string data_record_difference(const nlohmann::json& had, const nlohmann::json& now) {
    auto file = [](const nlohmann::json& f) {
        if (!f.is_object()) return std::string("the held-out part of the training file");
        return f.value("path", std::string("?")) + " (" + std::to_string(f.value("bytes", (int64_t)-1)) + " bytes, " +
               f.value("hash", std::string("?")) + ")";
    };
    auto same = [](const nlohmann::json& a, const nlohmann::json& b) {
        if (a.is_object() != b.is_object()) return false;
        return !a.is_object() || (a.value("bytes", (int64_t)-1) == b.value("bytes", (int64_t)-2) &&
                                  a.value("hash", std::string("a")) == b.value("hash", std::string("b")));
    };
    std::string diff;
    for (const char* key : {"train", "val"}) {
        const nlohmann::json a = had.value(key, nlohmann::json()), b = now.value(key, nlohmann::json());
        if (!same(a, b))
            diff += std::string(diff.empty() ? "" : "; ") + (key[0] == 't' ? "training data " : "validation data ") +
                    file(a) + " then, " + file(b) + " now";
    }
    const std::string fa = had.value("format", std::string()), fb = now.value("format", std::string());
    if (diff.empty() && !fa.empty() && !fb.empty() && fa != fb) diff = "data format " + fa + " then, " + fb + " now";
    return diff;
}

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

std::string model_file(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_directory(path, ec)) return path;
    const std::string file = latest_checkpoint(path);  // a run directory: the checkpoint `latest` names
    if (file.empty())
        throw std::runtime_error(path + " is a directory without a checkpoint (no 'latest'): give a run "
                                 "directory or a .safetensors file");
    return file;
}

ModelConfig checkpoint_model(const std::string& path) {
    const SafeTensors st = safetensors_read_header(model_file(path));
    auto it = st.metadata.find("config");
    if (it == st.metadata.end()) throw std::runtime_error(st.path + ": not an mhc checkpoint (no 'config' in the metadata)");
    try {
        return model_config_from_json(nlohmann::json::parse(it->second));
    } catch (const std::exception& e) {
        throw std::runtime_error(st.path + ": bad model config in the metadata: " + e.what());
    }
}

std::string load_model(const std::string& path, GPT<float>& m, SafeTensors* raw) {
    const std::string file = model_file(path);
    checkpoint_load(file, m, raw);
    const std::string bad = nonfinite_tensor(m.params, m.param);
    if (!bad.empty())
        throw std::runtime_error(file + ": tensor '" + bad + "' holds NaN or inf: the model is unusable "
                                 "(its run diverged; take an earlier checkpoint)");
    return file;
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

namespace {

// The first tensor (weights, or AdamW moments) holding NaN or inf, or "".
std::string nonfinite_state(const GPT<float>& m, const AdamW<float>& opt) {
    for (const auto& [buf, what] : {std::pair{&m.param, ""}, std::pair{&opt.m, "adam.m of "},
                                    std::pair{&opt.v, "adam.v of "}}) {
        const std::string name = nonfinite_tensor(m.params, *buf);
        if (!name.empty()) return what + name;
    }
    return "";
}

std::string fmt_seconds(double s) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, s);
    return std::string(buf, r.ptr);
}

}  // namespace

std::string save_checkpoint(const std::string& dir, const GPT<float>& m, const AdamW<float>& opt,
                            const ResumeState& rs, const std::string& train_config_json,
                            const std::map<std::string, std::string>& extra_meta) {
    const std::string base = dir + "/" + checkpoint_name(rs.step);
    // Never a checkpoint that cannot be evaluated or resumed: the last line of the NaN guard.
    const std::string bad = nonfinite_state(m, opt);
    if (!bad.empty())
        throw std::runtime_error(base + ".safetensors: not written: tensor '" + bad + "' holds NaN or inf");
    std::map<std::string, std::string> meta = extra_meta;
    meta["step"] = std::to_string(rs.step);
    checkpoint_save(base + ".safetensors", m, meta);
    SafeTensors st;
    st.metadata = {{"step", std::to_string(rs.step)},
                   {"adam_step", std::to_string(opt.step)},
                   {"train_rng", std::to_string(rs.train.rng)},
                   {"train_next", std::to_string(rs.train.next)},
                   {"time_s", fmt_seconds(rs.time_s)},
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
    load_checkpoint_file(ck, m, opt, rs);
}

void load_checkpoint_file(const std::string& ck, GPT<float>& m, AdamW<float>& opt, ResumeState& rs) {
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
    // Older checkpoints have no time_s (their run's clock starts again at 0 on resume) and carry a
    // validation position (val_rng, val_next) that the fixed validation set no longer needs.
    rs.time_s = 0;
    if (auto it = st.metadata.find("time_s"); it != st.metadata.end()) {
        const char* s = it->second.c_str();
        const auto r = std::from_chars(s, s + it->second.size(), rs.time_s);
        if (r.ec != std::errc() || !std::isfinite(rs.time_s) || rs.time_s < 0)
            throw std::runtime_error(optim + ": bad value for 'time_s'");
    }
    for (auto [name, dst] : {std::pair{"adam.m", &opt.m}, std::pair{"adam.v", &opt.v}}) {
        const StTensor& t = st.at(name);
        if (t.dtype != DType::F32 || t.numel() != (int64_t)m.param.size())
            throw std::runtime_error(optim + ": '" + name + "' does not match the model's " +
                                     std::to_string(m.param.size()) + " parameters");
        *dst = t.to_float();
    }
}

namespace {
// The step of a model file's path as checkpoint_name writes it (ckpt_NNNNNN.safetensors: six digits
// at least, seven from step 1,000,000 on), else -1.
long model_file_step(const std::string& path) {
    const std::string f = std::filesystem::path(path).filename().string(), ext = ".safetensors";
    if (f.rfind("ckpt_", 0) != 0 || f.size() <= 5 + ext.size() || f.compare(f.size() - ext.size(), ext.size(), ext))
        return -1;
    const std::string digits = f.substr(5, f.size() - 5 - ext.size());
    if (digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
    const long step = std::stol(digits);
    return checkpoint_name(step) + ext == f ? step : -1;
}
}  // namespace

std::string load_newest_intact(const std::string& dir, const std::string& before, GPT<float>& m,
                               AdamW<float>& opt, ResumeState& rs) {
    const std::vector<std::string> all = list_checkpoints(dir);
    const long limit = before.empty() ? -1 : model_file_step(before);  // -1: `latest` named no checkpoint
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
        if (limit >= 0 && model_file_step(*it) >= limit) continue;
        try {
            load_checkpoint_file(*it, m, opt, rs);
            return *it;
        } catch (const std::exception&) {  // corrupt or half there too: try the one before
        }
    }
    return "";
}

TrainConfig checkpoint_train_config(const std::string& dir) {
    const std::string ck = latest_checkpoint(dir);
    if (ck.empty()) throw std::runtime_error(dir + ": no checkpoint (no 'latest')");
    const std::string optim = optim_path_of(ck);
    const SafeTensors st = safetensors_read(optim);
    auto it = st.metadata.find("train_config");
    if (it == st.metadata.end()) throw std::runtime_error(optim + ": holds no training config");
    try {
        return config_from_json(nlohmann::json::parse(it->second));
    } catch (const std::exception& e) {
        throw std::runtime_error(optim + ": bad training config: " + e.what());
    }
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
    std::vector<std::pair<long, std::string>> models;  // in step order, not name order (seven digits)
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (const long step = model_file_step(e.path().string()); step >= 0) models.emplace_back(step, e.path().string());
    std::sort(models.begin(), models.end());
    std::vector<std::string> paths;
    for (auto& m : models) paths.push_back(std::move(m.second));
    return paths;
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

void clear(const std::string& dir) {
    namespace fs = std::filesystem;
    const Writer w = take(dir);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path() != fs::path(lock_path(dir))) fs::remove_all(e.path(), ec);
    if (ec) throw std::runtime_error(dir + ": cannot empty the run directory: " + ec.message());
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
