// The CPU engine and the table of devices (see engine.h).
#include "train/engine.h"

#include <cmath>
#include <stdexcept>

#include "mhc/diag.h"
#include "mhc/sample.h"

namespace mhc {

namespace {

// The CPU: the host model and AdamW state are the engine's own.
class CpuEngine final : public Engine {
public:
    CpuEngine(GPT<float>& m, AdamW<float>& adam) : m_(m), adam_(adam) {}
    double forward(const int32_t* in, const int32_t* tg, int B, int Tn) override {
        return gpt_forward(m_, in, tg, B, Tn);
    }
    void backward(double scale) override { gpt_backward(m_, scale); }
    void zero_grad() override { gpt_zero_grad(m_); }
    double grad_norm() override { return mhc::grad_norm(m_.grad.data(), (long)m_.grad.size()); }
    void clip_grad(double norm, double max_norm) override {
        mhc::clip_grad(m_.grad.data(), (long)m_.grad.size(), norm, max_norm);
    }
    bool adamw_step_is_finite(double lr, double b1, double b2, double wd) override {
        return mhc::adamw_step_is_finite(adam_, m_.param.data(), m_.grad.data(), m_.params, lr, b1, b2, wd);
    }
    void adamw_step(double lr, double b1, double b2, double wd) override {
        mhc::adamw_step(adam_, m_.param.data(), m_.grad.data(), m_.params, lr, b1, b2, wd);
    }
    void poison_grad() override { m_.grad[0] = NAN; }
    const float* logits() override { return m_.logits; }
    nlohmann::json diagnostics() override { return gpt_diagnostics(m_); }
    void to_host() override {}
    void set_phases(PhaseTimes* p) override { m_.phases = p; }
    std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int max_new, const Sampling& s,
                                  const std::function<void(int32_t)>& on_token) override {
        return mhc::generate(m_, prompt, max_new, s, on_token);
    }

private:
    GPT<float>& m_;
    AdamW<float>& adam_;
};

std::vector<EngineBackend>& backends() {
    static std::vector<EngineBackend> b;
    return b;
}

const EngineBackend* find(const std::string& device) {
    for (const EngineBackend& b : backends())
        if (b.device == device) return &b;
    return nullptr;
}

// The backend for a device other than the CPU, usable here; else one line saying why not.
const EngineBackend& usable(const std::string& device) {
    const EngineBackend* b = find(device);
    if (!b && device == "cuda")
        throw std::runtime_error("--device cuda: this mhc was built without CUDA (configure it where the CUDA "
                                 "toolkit is installed, -DMHC_CUDA=ON; README.md)");
    if (!b) {
        std::string all;
        for (const std::string& d : engine_devices()) all += (all.empty() ? "" : ", ") + d;
        throw std::runtime_error("unknown device '" + device + "' (this mhc has " + all + ")");
    }
    const std::string why = b->unusable();
    if (!why.empty()) throw std::runtime_error("--device " + device + ": " + why);
    return *b;
}

}  // namespace

void engine_register(const EngineBackend& backend) {
    if (!find(backend.device)) backends().push_back(backend);
}

std::vector<std::string> engine_devices() {
    std::vector<std::string> d = {"cpu"};
    for (const EngineBackend& b : backends()) d.push_back(b.device);
    return d;
}

void engine_require(const std::string& device) {
    if (device != "cpu") usable(device);
}

EngineOptions engine_options(const TrainConfig& cfg) { return {cfg.dtype == "bf16", cfg.cuda_graphs}; }

std::unique_ptr<Engine> engine_make(const std::string& device, GPT<float>& m, AdamW<float>& adam,
                                    const EngineOptions& opt) {
    if (device == "cpu" && opt.bf16)
        throw std::invalid_argument("dtype bf16 needs device cuda (the CPU engine computes in fp32: --set dtype=fp32)");
    if (device == "cpu" && opt.cuda_graphs)
        throw std::invalid_argument("cuda_graphs needs device cuda (--set cuda_graphs=false)");
    if (device == "cpu") return std::make_unique<CpuEngine>(m, adam);
    return usable(device).make(m, adam, opt);
}

SgemmPeak engine_sgemm_peak(const std::string& device, const std::vector<std::vector<int>>& shapes) {
    if (device == "cpu") return sgemm_peak(shapes);
    return usable(device).sgemm_peak(shapes);
}

SgemmPeak engine_bf16_peak(const std::string& device, const std::vector<std::vector<int>>& shapes) {
    if (device == "cpu") return {};
    return usable(device).bf16_peak(shapes);
}

DeviceRoom engine_room(const std::string& device, const ModelConfig& model, bool bf16) {
    if (device == "cpu") return {};
    return usable(device).room(model, bf16);
}

double engine_conn_scratch(const std::string& device, const ModelConfig& model, long tokens) {
    if (device == "cpu") return -1;
    return usable(device).conn_scratch(model, tokens);
}

}  // namespace mhc
