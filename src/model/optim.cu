// AdamW, gradient norm and clipping on the GPU (model/optim_cuda.h).
#include <cmath>

#include "cuda/device.cuh"
#include "model/optim_cuda.h"

namespace mhc::cuda {

namespace {

constexpr long kNormBlock = 1 << 14;  // the CPU's grad_norm block

// Block b: Σ g² over values [b·16384, (b+1)·16384), in double.
__global__ void k_sumsq_blocks(const float* g, long count, double* part) {
    __shared__ double sh[32];
    const long b0 = blockIdx.x * kNormBlock, b1 = lmin(count, b0 + kNormBlock);
    double ss = 0;
    for (long i = b0 + threadIdx.x; i < b1; i += blockDim.x) ss += (double)g[i] * (double)g[i];
    ss = block_sum(ss, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = ss;
}

__global__ void k_sum_in_order(const double* part, long nb, double* out) {
    if (threadIdx.x || blockIdx.x) return;
    double ss = 0;
    for (long b = 0; b < nb; b++) ss += part[b];
    *out = ss;
}

struct Scale {
    float* g;
    double coef;
    MHC_DEV void operator()(long i) const { g[i] = (float)((double)g[i] * coef); }
};

// clip_grad's rule with the norm read on the device.
struct ScaleChecked {
    float* g;
    const StepCheck* chk;
    double max_norm;
    MHC_DEV void operator()(long i) const {
        const double norm = sqrt(chk->sumsq);
        if (!isfinite(chk->loss) || !isfinite(norm)) return;
        const double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) g[i] = (float)((double)g[i] * coef);
    }
};

MHC_DEV bool clean(const StepCheck& c) { return isfinite(c.loss) && isfinite(c.sumsq) && c.bad == 0; }

struct AdamWUpdate {
    float *p, *m, *v;
    const float* g;
    const long* seg_end;
    const unsigned char* seg_decay;
    int nseg;
    float decay, b1, b2, step_size, bc2_sqrt, eps;
    const StepCheck* gate = nullptr;  // set: nothing is written unless it is clean
    MHC_DEV void operator()(long i) const {
        if (gate && !clean(*gate)) return;
        int lo = 0, hi = nseg - 1;  // the first run that ends after i
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (seg_end[mid] > i) hi = mid;
            else lo = mid + 1;
        }
        const float gi = g[i];
        float pi = p[i] * (seg_decay[lo] ? decay : 1.0f);
        const float mi = m[i] * b1 + gi * (1.0f - b1);
        const float vi = v[i] * b2 + gi * gi * (1.0f - b2);
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi -= step_size * mi / denom;
        p[i] = pi, m[i] = mi, v[i] = vi;
    }
};

// adamw_step_is_finite's per-element test: AdamWUpdate's expressions, nothing stored; block b
// writes how many of its elements would become non-finite (summed in a fixed order, no atomics).
__global__ void k_adamw_nonfinite(AdamWUpdate u, long count, double* part) {
    __shared__ double sh[32];
    const long b0 = blockIdx.x * kNormBlock, b1 = lmin(count, b0 + kNormBlock);
    double bad = 0;
    for (long i = b0 + threadIdx.x; i < b1; i += blockDim.x) {
        int lo = 0, hi = u.nseg - 1;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (u.seg_end[mid] > i) hi = mid;
            else lo = mid + 1;
        }
        const float gi = u.g[i];
        float pi = u.p[i] * (u.seg_decay[lo] ? u.decay : 1.0f);
        const float mi = (u.m ? u.m[i] : 0.0f) * u.b1 + gi * (1.0f - u.b1);
        const float vi = (u.v ? u.v[i] : 0.0f) * u.b2 + gi * gi * (1.0f - u.b2);
        const float denom = sqrtf(vi) / u.bc2_sqrt + u.eps;
        pi -= u.step_size * mi / denom;
        bad += !(isfinite(pi) && isfinite(mi) && isfinite(vi));
    }
    bad = block_sum(bad, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = bad;
}

// The runs of consecutive tensors with the same decay flag (AdamWCuda::seg_end, seg_decay).
void upload_segments(AdamWCuda& st, const std::vector<ParamTensor>& tensors) {
    if (!st.seg_end.empty()) return;
    std::vector<long> end;
    std::vector<unsigned char> decay;
    for (const auto& t : tensors) {
        if (!end.empty() && decay.back() == (unsigned char)t.decay) end.back() = t.offset + t.size;
        else end.push_back(t.offset + t.size), decay.push_back((unsigned char)t.decay);
    }
    st.seg_end.upload(end);
    st.seg_decay.upload(decay);
}

}  // namespace

namespace {
// Σ g² into *out (device).
void sumsq(const float* g, long count, double* out) {
    const long nb = (count + kNormBlock - 1) / kNormBlock;
    double* part = workspace((size_t)nb);
    MHC_LAUNCH(k_sumsq_blocks, (unsigned)nb, kThreads, g, count, part);
    MHC_LAUNCH(k_sum_in_order, 1, 32, part, nb, out);
}
}  // namespace

double grad_norm(const float* g, long count) {
    if (count <= 0) return 0.0;
    static DeviceBuffer<double> out(1);
    sumsq(g, count, out.data());
    double ss = 0;
    out.download(&ss, 1);
    return std::sqrt(ss);
}

void grad_sumsq_into(const float* g, long count, StepCheck* chk) {
    if (count <= 0) return fill_bytes(&chk->sumsq, 0, sizeof(double));
    sumsq(g, count, &chk->sumsq);
}

void clip_grad_checked(float* g, long count, const StepCheck* chk, double max_norm) {
    if (max_norm <= 0) return;
    each(count, ScaleChecked{g, chk, max_norm});
}

void clip_grad(float* g, long count, double norm, double max_norm) {
    if (max_norm <= 0) return;
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return;
    each(count, Scale{g, coef});
}

namespace {
// The update of step `step` (bias corrections from it), on the moments when they exist (fresh:
// the first step's zero moments, read as null by the finiteness check).
AdamWUpdate update_of(AdamWCuda& st, float* param, const float* grad, const std::vector<ParamTensor>& tensors,
                      double lr, double beta1, double beta2, double weight_decay, long step, bool fresh) {
    upload_segments(st, tensors);
    const double bc1 = 1.0 - std::pow(beta1, (double)step);
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, (double)step));
    return AdamWUpdate{param, fresh ? nullptr : st.m.data(), fresh ? nullptr : st.v.data(), grad, st.seg_end.data(),
                       st.seg_decay.data(), (int)st.seg_end.size(), (float)(1.0 - lr * weight_decay), (float)beta1,
                       (float)beta2, (float)(lr / bc1), (float)bc2_sqrt, 1e-8f};
}

long count_of(const std::vector<ParamTensor>& tensors) { return tensors.back().offset + tensors.back().size; }

void ensure_moments(AdamWCuda& st, long count) {
    if ((long)st.m.size() == count) return;
    st.m.resize(count), st.v.resize(count);
    st.m.fill_bytes(0), st.v.fill_bytes(0);
}

// The number of values the update would make non-finite, into *out (device).
void nonfinite_count(const AdamWUpdate& u, long count, double* out) {
    const long nb = (count + kNormBlock - 1) / kNormBlock;
    double* part = workspace((size_t)nb);
    MHC_LAUNCH(k_adamw_nonfinite, (unsigned)nb, kThreads, u, count, part);
    MHC_LAUNCH(k_sum_in_order, 1, 32, part, nb, out);
}
}  // namespace

void adamw_step(AdamWCuda& st, float* param, const float* grad, const std::vector<ParamTensor>& tensors, double lr,
                double beta1, double beta2, double weight_decay) {
    if (tensors.empty()) return;
    const long count = count_of(tensors);
    ensure_moments(st, count);
    st.step++;
    each(count, update_of(st, param, grad, tensors, lr, beta1, beta2, weight_decay, st.step, false));
}

void adamw_step_checked(AdamWCuda& st, float* param, const float* grad, const std::vector<ParamTensor>& tensors,
                        double lr, double beta1, double beta2, double weight_decay, const StepCheck* chk) {
    if (tensors.empty()) return;
    const long count = count_of(tensors);
    ensure_moments(st, count);  // zero moments are what a first step reads, applied or not
    AdamWUpdate u = update_of(st, param, grad, tensors, lr, beta1, beta2, weight_decay, st.step + 1, false);
    u.gate = chk;
    each(count, u);
}

bool adamw_step_is_finite(AdamWCuda& st, const float* param, const float* grad, const std::vector<ParamTensor>& tensors,
                          double lr, double beta1, double beta2, double weight_decay) {
    if (tensors.empty()) return true;
    const long count = count_of(tensors);
    const bool fresh = (long)st.m.size() != count;  // the first step starts from zero moments
    static DeviceBuffer<double> out(1);
    nonfinite_count(update_of(st, const_cast<float*>(param), grad, tensors, lr, beta1, beta2, weight_decay,
                              st.step + 1, fresh),
                    count, out.data());
    double bad = 0;
    out.download(&bad, 1);
    return bad == 0;
}

void adamw_nonfinite_into(AdamWCuda& st, const float* param, const float* grad, const std::vector<ParamTensor>& tensors,
                          double lr, double beta1, double beta2, double weight_decay, StepCheck* chk) {
    if (tensors.empty()) return fill_bytes(&chk->bad, 0, sizeof(double));
    const long count = count_of(tensors);
    const bool fresh = (long)st.m.size() != count;
    nonfinite_count(update_of(st, const_cast<float*>(param), grad, tensors, lr, beta1, beta2, weight_decay,
                              st.step + 1, fresh),
                    count, &chk->bad);
}

void adamw_download(const AdamWCuda& st, AdamW<float>& out) {
    out.m = st.m.download();
    out.v = st.v.download();
    out.step = st.step;
}

void adamw_upload(AdamWCuda& st, const AdamW<float>& in) {
    st.m.upload(in.m);
    st.v.upload(in.v);
    st.step = in.step;
}

}  // namespace mhc::cuda
