// Run-directory checkpoints: model + optimizer state + data positions, and the `latest` pointer.
#include "train/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "mhc/checkpoint.h"
#include "mhc/train.h"

namespace mhc::detail {

void write_file_atomic(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp." + std::to_string(getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == (ssize_t)text.size();
    ok = fd >= 0 && ::fsync(fd) == 0 && ok;
    if (fd >= 0) ok = ::close(fd) == 0 && ok;
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        ::unlink(tmp.c_str());
        throw std::runtime_error(path + ": cannot write: " + why);
    }
}

static std::string ckpt_name(long step) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "ckpt_%06ld", step);
    return buf;
}

std::string save_run_checkpoint(const std::string& dir, const GPT<float>& m, const AdamW<float>& opt,
                                const ResumeState& rs, const std::string& train_config_json,
                                const std::map<std::string, std::string>& extra_meta) {
    const std::string base = dir + "/" + ckpt_name(rs.step);
    std::map<std::string, std::string> meta = extra_meta;
    meta["step"] = std::to_string(rs.step);
    checkpoint_save(base + ".safetensors", m, meta);
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
    write_file_atomic(dir + "/latest", ckpt_name(rs.step) + "\n");
    return base + ".safetensors";
}

void load_run_checkpoint(const std::string& dir, GPT<float>& m, AdamW<float>& opt, ResumeState& rs) {
    const std::string ck = run_latest_checkpoint(dir);
    if (ck.empty()) throw std::runtime_error(dir + ": no checkpoint to resume from (no 'latest')");
    checkpoint_load(ck, m);
    const std::string optim = ck.substr(0, ck.size() - 12) + ".optim.safetensors";
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

void prune_checkpoints(const std::string& dir, int keep) {
    namespace fs = std::filesystem;
    const std::string latest = run_latest_checkpoint(dir);
    std::vector<std::string> models;  // ckpt_NNNNNN.safetensors, zero-padded: name order is step order
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string f = e.path().filename().string();
        if (f.rfind("ckpt_", 0) == 0 && f.size() == 23 && f.compare(11, 12, ".safetensors") == 0)
            models.push_back(e.path().string());
    }
    std::sort(models.begin(), models.end());
    for (size_t i = 0; i + keep < models.size(); i++) {
        if (models[i] == latest) continue;
        std::error_code ec;  // best effort: a file we cannot delete costs disk space, not the run
        fs::remove(models[i], ec);
        fs::remove(models[i].substr(0, models[i].size() - 12) + ".optim.safetensors", ec);
    }
}

void remove_stale_temporaries(const std::string& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(e.path(), ec);
}

}  // namespace mhc::detail

namespace mhc {

std::string run_latest_checkpoint(const std::string& dir) {
    std::ifstream f(dir + "/latest");
    std::string name;
    if (!f || !std::getline(f, name) || name.empty()) return "";
    return dir + "/" + name + ".safetensors";
}

}  // namespace mhc
