// The GPU engine (train/engine_cuda.h): the model as GptCuda, AdamW as AdamWCuda, both uploaded
// from the host model and state when made and downloaded by to_host(); sampling through the GPU's
// KV-cache step and mhc/sample.h's loop; the sgemm peak through cuBLAS.
#include "train/engine_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "cuda/cuda.h"
#include "cuda/graph.h"
#include "cuda/phase_timer.h"
#include "mhc/sample.h"
#include "model/gpt_cuda.h"
#include "model/optim_cuda.h"
#include "train/engine.h"

namespace mhc {

namespace {

// The device's free and total memory (cudaMemGetInfo).
std::pair<double, double> device_memory() {
    size_t free = 0, total = 0;
    MHC_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return {(double)free, (double)total};
}

class CudaEngine final : public Engine {
public:
    CudaEngine(GPT<float>& m, AdamW<float>& adam, const EngineOptions& opt)
        : m_(m), adam_(adam), graphs_(opt.cuda_graphs) {
        gpt_cuda_build(g_, m, opt.bf16);
        std::vector<cuda::AdamWCuda::Copy> copies;  // the update writes the bf16 weights itself
        for (const auto& l : g_.lin16) copies.push_back({l.w_off, l.count, l.w16});
        cuda::adamw_copy_bf16(st_, std::move(copies));
        if (!adam.m.empty()) cuda::adamw_upload(st_, adam);
        st_.step = adam.step;
    }
    double forward(const int32_t* in, const int32_t* tg, int B, int Tn) override {
        return gpt_cuda_forward(g_, in, tg, B, Tn);
    }
    void backward(double scale) override { gpt_cuda_backward(g_, scale); }
    // Engine::step's rule with every decision on the device (optim_cuda.h: StepCheck): the loss
    // accumulates there, the norm, clipping, the update's check and the update read it there, and
    // the host waits once, at the end, for the three numbers. The same arithmetic per value as the
    // default (the check and the update read each gradient as the clipping would leave it, and
    // the update writes the bf16 weights), so the same bits. The optimizer's time comes from two CUDA events.
    // With cuda_graphs, each micro-batch's forward and backward is one graph and the update
    // another (cuda/graph.h), from the second step on (the first makes what the step allocates
    // once) and while no op is timed; the batch, its embedding index and AdamW's numbers are
    // uploaded before each launch, so a replay computes what the direct calls would: the same bits.
    StepStats step(Batcher& batches, const TrainConfig& cfg, double lr, int32_t* in, int32_t* tg,
                   bool force_nonfinite) override {
        const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
        if (chk_.empty()) chk_.resize(1), opt_begin_.create(), opt_end_.create();
        cuda::StepCheck* chk = chk_.data();
        // graphs_ itself is read at each use: a refused capture turns it off within the step.
        const bool may_replay = steps_ > 0 && !phases_;
        StepStats st;
        st.lr = lr;
        chk_.fill_bytes(0);
        gpt_cuda_zero_grad(g_);
        const double scale = 1.0 / accum;
        for (int micro = 0; micro < accum; micro++) {
            batches.next(in, tg);
            gpt_cuda_stage(g_, in, tg, B, T);
            const auto pass = [&] {
                gpt_cuda_forward_staged(g_, &chk->loss, accum, scale);
                gpt_cuda_backward(g_, scale);
            };
            if (graphs_ && may_replay && replay(pass_graph_, {B, T, accum}, pass)) gpt_cuda_mark_replayed(g_, scale);
            else pass();
        }
        if (force_nonfinite) poison_grad();
        opt_begin_.record();
        const long n = count();
        cuda::adamw_prepare(st_, g_.host.params, lr, cfg.beta1, cfg.beta2, cfg.weight_decay, cfg.grad_clip);
        const auto update = [&] {
            cuda::grad_sumsq_into(g_.grad.data(), n, chk);
            cuda::adamw_nonfinite_into(st_, g_.param.data(), g_.grad.data(), chk);
            cuda::adamw_step_checked(st_, g_.param.data(), g_.grad.data(), chk);
        };
        if (!(graphs_ && may_replay && replay(update_graph_, {n}, update))) update();
        opt_end_.record();
        steps_++;
        cuda::StepCheck c;
        chk_.download(&c, 1);  // the one wait
        st.loss = force_nonfinite ? NAN : c.loss;
        st.grad_norm = std::sqrt(c.sumsq);
        step_verdict(st, c.bad == 0);  // the kernels applied the update exactly when this says so
        if (st.finite) st_.step++;
        st.optimizer_s = opt_begin_.seconds_to(opt_end_);
        if (phases_) timer_.collect(*phases_);
        return st;
    }
    void zero_grad() override { gpt_cuda_zero_grad(g_); }
    double grad_norm() override { return cuda::grad_norm(g_.grad.data(), count()); }
    void clip_grad(double norm, double max_norm) override { cuda::clip_grad(g_.grad.data(), count(), norm, max_norm); }
    bool adamw_step_is_finite(double lr, double b1, double b2, double wd) override {
        return cuda::adamw_step_is_finite(st_, g_.param.data(), g_.grad.data(), g_.host.params, lr, b1, b2, wd);
    }
    void adamw_step(double lr, double b1, double b2, double wd) override {
        cuda::adamw_step(st_, g_.param.data(), g_.grad.data(), g_.host.params, lr, b1, b2, wd);
    }
    void poison_grad() override {
        const float nan = NAN;
        cuda::copy_to_device(g_.grad.data(), &nan, sizeof nan);
    }
    void finish() override {
        cuda::synchronize();
        if (phases_) timer_.collect(*phases_);
    }
    // The ops' device times (CUDA events), read at the end of step() (or at finish(), which the
    // default Engine::step calls after the backward): the optimizer's kernels are not ops, so they
    // stay out of them and are timed on their own (StepStats::optimizer_s).
    void set_phases(PhaseTimes* p) override {
        if (phases_) timer_.collect(*phases_);
        phases_ = p;
        g_.timer = p ? &timer_ : nullptr;
    }
    double device_peak_bytes() override { return (double)cuda::device_bytes_peak(); }
    double device_used_bytes() override {
        const auto [free, total] = device_memory();
        return total - free;
    }
    const float* logits() override {
        logits_ = gpt_cuda_logits(g_);
        return logits_.data();
    }
    nlohmann::json diagnostics() override { return gpt_cuda_diagnostics(g_); }
    void to_host() override {
        gpt_cuda_download_params(g_, m_.param.data());
        // Moments only once a step was applied: step() makes zero moments before it knows whether
        // its first update will be skipped, and the host's AdamW has none until one is applied.
        if (!st_.m.empty() && st_.step > 0) cuda::adamw_download(st_, adam_);
        adam_.step = st_.step;
    }
    std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int max_new, const Sampling& s,
                                  const std::function<void(int32_t)>& on_token) override {
        if (kv_.buf.empty()) kv_cache_cuda_init(kv_, g_);
        return generate_with<float>(
            g_.host.V, g_.host.Tmax, [&](int32_t t) { return gpt_cuda_forward_token(g_, kv_, t); },
            [&] { kv_.pos = 0; }, prompt, max_new, s, on_token);
    }

    long graph_replays() const override { return replays_; }

private:
    long count() const { return (long)g_.grad.size(); }
    // Runs work through its graph; false (and graphs off for good, with one line on stderr) when it
    // cannot be captured: the step then runs it directly.
    bool replay(cuda::Graph& graph, std::vector<long> key, const std::function<void()>& work) {
        std::string why;
        // Test hook (CudaEngineStep.RefusedCaptureRunsWithoutGraphs): a wait inside the capture,
        // which CUDA refuses, as a call the engine's step must not make would be.
        const bool refuse = std::getenv("MHC_TEST_REFUSE_CAPTURE") != nullptr;
        const auto waits = [&] {
            cuda::synchronize();
            work();
        };
        if (graph.run(std::move(key), refuse ? std::function<void()>(waits) : work, &why)) return ++replays_, true;
        std::fprintf(stderr, "mhc: cuda_graphs off for this run: the step could not be captured (%s)\n", why.c_str());
        graphs_ = false;
        pass_graph_.reset(), update_graph_.reset();
        return false;
    }
    GPT<float>& m_;
    AdamW<float>& adam_;
    GptCuda g_;
    cuda::AdamWCuda st_;
    KVCacheCuda kv_;
    std::vector<float> logits_;
    cuda::PhaseTimer timer_;
    PhaseTimes* phases_ = nullptr;
    cuda::DeviceBuffer<cuda::StepCheck> chk_;
    cuda::Event opt_begin_, opt_end_;
    bool graphs_;      // cuda_graphs, until a capture fails
    long steps_ = 0;   // step() calls so far
    long replays_ = 0; // graph launches so far
    cuda::Graph pass_graph_, update_graph_;
};

template <typename T> T to(float x) {
    if constexpr (std::is_same_v<T, float>) return x;
    else return __float2bfloat16(x);
}

std::string unusable() {
    std::string why;
    return cuda_available(&why) ? "" : why;
}

std::unique_ptr<Engine> make(GPT<float>& m, AdamW<float>& adam, const EngineOptions& opt) {
    return std::make_unique<CudaEngine>(m, adam, opt);
}

// bench.h's sgemm_peak on the GPU: cuBLAS's best rate over the shapes (bench.h's gemm_peak_over),
// each product waited for; T float (fp32, TF32 off) or bf16 (bf16 products, fp32 sums, tensor cores).
template <typename T> SgemmPeak gemm_peak(const std::vector<std::vector<int>>& shapes) {
#if MHC_CUDA_EMU
    // The emulation's GEMM is a plain loop whose speed means nothing: a small product keeps
    // `mhc bench --device cuda` short in the emulated tests.
    const std::vector<std::vector<int>> shapes_run = {{64, 64, 64}};
    (void)shapes;
#else
    const std::vector<std::vector<int>>& shapes_run = shapes;
#endif
    return gemm_peak_over(shapes_run, 5, [](int M, int N, int K) -> std::function<void()> {
        // The CPU's operands: small values of both signs, no overflow, no denormals, no zeros.
        std::vector<T> A((size_t)M * K), Bm((size_t)K * N);
        for (size_t i = 0; i < A.size(); i++) A[i] = to<T>((float)((int)(i % 17) - 8) * 0.01f);
        for (size_t i = 0; i < Bm.size(); i++) Bm[i] = to<T>((float)((int)(i % 13) - 6) * 0.01f);
        auto dA = std::make_shared<cuda::DeviceBuffer<T>>(), dB = std::make_shared<cuda::DeviceBuffer<T>>();
        auto dC = std::make_shared<cuda::DeviceBuffer<float>>((size_t)M * N);
        dA->upload(A);
        dB->upload(Bm);
        return [=] {
            if constexpr (std::is_same_v<T, float>)
                cuda::gemm(false, false, M, N, K, 1.0f, dA->data(), K, dB->data(), N, 0.0f, dC->data(), N);
            else
                cuda::gemm_bf16(false, false, M, N, K, 1.0f, dA->data(), K, dB->data(), N, 0.0f, dC->data(), N);
            cuda::synchronize();
        };
    });
}

// The stack reserve for the model's coefficient kernels is made here, so that the free memory read
// next is what the engine's buffers will find (the engine makes it again, a no-op then).
DeviceRoom room(const ModelConfig& model, bool bf16) {
    const size_t before = cuda::stack_limit();
    cuda::reserve_stack(cuda::conn_stack_bytes_cuda(conn_site_make(gpt_site_config(model, 0))));
    const double stack = cuda::stack_reserve_bytes(cuda::stack_limit()) - cuda::stack_reserve_bytes(before);
    const double blas = (double)cuda::blas_workspace_to_come(bf16);
    return {std::max(0.0, device_memory().first - blas), stack, blas};
}

// Every site has the same sizes (gpt_site_config); the model plans one scratch for all (gpt_cuda.cpp).
double conn_scratch(const ModelConfig& model, long tokens) {
    const int N = (int)std::min(tokens, 1000000000L);  // an absurd batch stays absurd, not overflowed
    return (double)cuda::conn_scratch_size_cuda(conn_site_make(gpt_site_config(model, 0)), N);
}

}  // namespace

void cuda_engine_register() {
    engine_register({"cuda", unusable, make, gemm_peak<float>, gemm_peak<cuda::bf16>, room, conn_scratch});
}

}  // namespace mhc
