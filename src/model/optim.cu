// AdamW, gradient norm and clipping on the GPU (model/optim_cuda.h).
#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>

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

// clip_grad's coefficient with the norm read on the device, 1 where it leaves the gradients as
// they are: without a check, with clipping off, or when the loss or the norm is not finite (the
// step is skipped then). Read once per thread, not per value.
MHC_DEV double clip_coef(const StepCheck* chk, double max_norm) {
    if (!chk || max_norm <= 0) return 1.0;
    const double norm = sqrt(chk->sumsq);
    if (!isfinite(chk->loss) || !isfinite(norm)) return 1.0;
    const double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}
// g as clip_grad leaves it with that coefficient: the same expression, so the same bits.
MHC_DEV float clipped(float g, double coef) { return coef < 1.0 ? (float)((double)g * coef) : g; }

MHC_DEV bool clean(const StepCheck& c) { return isfinite(c.loss) && isfinite(c.sumsq) && c.bad == 0; }

constexpr long kNoCopy = LONG_MIN;  // a run whose weights have no bf16 copy

// The run of element i: the first whose end is after it.
MHC_DEV int run_of(const long* seg_end, int nseg, long i) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (seg_end[mid] > i) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

// |x| for a maximum that a NaN must not escape: NaN counts as infinite.
MHC_DEV float magnitude(float x) { return isnan(x) ? INFINITY : fabsf(x); }

// Element i of the update: the clipped gradient (with a check), the moments, the weight, and the
// weight's bf16 copy where its run has one (copy[i + seg_copy[run]]).
struct AdamWUpdate {
    float *p, *m, *v;
    const float* g;
    const long* seg_end;
    const unsigned char* seg_decay;
    const long* seg_copy;
    bf16* copy;
    int nseg;
    const AdamWCuda::Scalars* scalars;  // the step's numbers on the device (adamw_prepare)
    const StepCheck* chk = nullptr;  // set: g is clipped by its norm, and nothing is written unless it is clean
    const double* bound = nullptr;  // AdamWCuda::bound, when allocated
    AdamWCuda::Scalars s{};  // *scalars, once a kernel has loaded them (first thing it does)
    MHC_DEV void load() { s = *scalars; }
    // Element i's new weight and moments (nothing written; the moments zero where m, v are null: a
    // first step's), with the gradient clipped by coef (clip_coef); r: its run.
    MHC_DEV void next(long i, int r, double coef, float* pi, float* mi, float* vi) const {
        const float gi = clipped(g[i], coef);
        const float p1 = p[i] * (seg_decay[r] ? s.decay : 1.0f);
        *mi = (m ? m[i] : 0.0f) * s.b1 + gi * (1.0f - s.b1);
        *vi = (v ? v[i] : 0.0f) * s.b2 + gi * gi * (1.0f - s.b2);
        const float denom = sqrtf(*vi) / s.bc2_sqrt + s.eps;
        *pi = p1 - s.step_size * *mi / denom;
    }
    // Writes element i; raises *mp, *mm, *mv to the magnitudes of its new weight and moments.
    MHC_DEV void apply(long i, double coef, float* mp, float* mm, float* mv) const {
        const int r = run_of(seg_end, nseg, i);
        float pi, mi, vi;
        next(i, r, coef, &pi, &mi, &vi);
        p[i] = pi, m[i] = mi, v[i] = vi;
        if (seg_copy[r] != kNoCopy) copy[i + seg_copy[r]] = __float2bfloat16(pi);
        *mp = fmaxf(*mp, magnitude(pi)), *mm = fmaxf(*mm, magnitude(mi)), *mv = fmaxf(*mv, magnitude(vi));
    }
};

// Block b updates values [b·16384, (b+1)·16384) (nothing unless the check is clean) and writes
// the maxima of |p|, |m| and v after it into part[3b .. 3b + 2] (exact in any order).
__global__ void k_adamw_update(AdamWUpdate u, long count, float* part) {
    __shared__ float sh[32];
    u.load();
    const long b0 = blockIdx.x * kNormBlock, b1 = lmin(count, b0 + kNormBlock);
    float mp = 0, mm = 0, mv = 0;
    if (!u.chk || clean(*u.chk)) {
        const double coef = clip_coef(u.chk, u.s.max_norm);
        for (long i = b0 + threadIdx.x; i < b1; i += blockDim.x) u.apply(i, coef, &mp, &mm, &mv);
    }
    mp = block_max(mp, sh), mm = block_max(mm, sh), mv = block_max(mv, sh);
    if (threadIdx.x == 0) part[3 * blockIdx.x] = mp, part[3 * blockIdx.x + 1] = mm, part[3 * blockIdx.x + 2] = mv;
}

// The blocks' maxima into bound (AdamWCuda::bound), marked valid; nothing when the update was not
// applied (the weights and moments are unchanged, and so is what bound says of them).
__global__ void k_adamw_bound(const float* part, long nb, const StepCheck* chk, double* bound) {
    if (threadIdx.x || blockIdx.x || (chk && !clean(*chk))) return;
    float mp = 0, mm = 0, mv = 0;
    for (long b = 0; b < nb; b++)
        mp = fmaxf(mp, part[3 * b]), mm = fmaxf(mm, part[3 * b + 1]), mv = fmaxf(mv, part[3 * b + 2]);
    bound[0] = mp, bound[1] = mm, bound[2] = mv, bound[3] = 1.0;
}

// Whether no value can become non-finite in this update, from the bound on the present weights
// and moments and the norm of the gradients, so that the per-value check need not read them. Each
// intermediate of the update is bounded far below FLT_MAX (3.4e38), which covers every fp32
// rounding on the way by orders of magnitude: |g| <= the clipped norm, |m'| <= |b1|·M + |1 - b1|·G,
// v' <= b2·V + (1 - b2)·G², the denominator >= eps, |p'| <= P·max(1, |decay|) + |lr'|·|m'| / eps.
MHC_DEV bool provably_finite(const AdamWUpdate& u) {
    if (!u.chk || !u.bound || u.bound[3] != 1.0) return false;
    const double norm = sqrt(u.chk->sumsq);
    if (!isfinite(norm) || !isfinite(u.chk->loss)) return false;
    const double G = 1.01 * norm * clip_coef(u.chk, u.s.max_norm);
    const double P = u.bound[0], M = u.m ? u.bound[1] : 0.0, V = u.v ? u.bound[2] : 0.0;
    const double b1 = u.s.b1, b2 = u.s.b2, dec = u.s.decay, lr = u.s.step_size, eps = u.s.eps;
    if (!(b2 >= 0 && b2 <= 1 && u.s.bc2_sqrt > 0 && eps > 0 && isfinite(b1) && isfinite(dec) && isfinite(lr)))
        return false;
    constexpr double lim = 1e30;
    const double m1 = 1.01 * (fabs(b1) * M + fabs(1.0 - b1) * G);
    const double v1 = 1.01 * (b2 * V + (1.0 - b2) * G * G);
    const double p1 = 1.01 * (P * fmax(1.0, fabs(dec)) + fabs(lr) * m1 / eps);
    return P <= lim && M <= lim && V <= lim && G * G <= lim && m1 <= lim && v1 <= lim && fabs(lr) * m1 <= lim &&
           p1 <= lim;
}

// adamw_step_is_finite's per-element test: AdamWUpdate::next, nothing stored; block b
// writes how many of its elements would become non-finite (summed in a fixed order, no atomics).
// When the update is provably finite it reads nothing and counts none.
__global__ void k_adamw_nonfinite(AdamWUpdate u, long count, double* part) {
    __shared__ double sh[32];
    u.load();
    if (provably_finite(u)) {  // the same answer in every thread of the block
        if (threadIdx.x == 0) part[blockIdx.x] = 0;
        return;
    }
    const long b0 = blockIdx.x * kNormBlock, b1 = lmin(count, b0 + kNormBlock);
    const double coef = clip_coef(u.chk, u.s.max_norm);
    double bad = 0;
    for (long i = b0 + threadIdx.x; i < b1; i += blockDim.x) {
        float pi, mi, vi;
        u.next(i, run_of(u.seg_end, u.nseg, i), coef, &pi, &mi, &vi);
        bad += !(isfinite(pi) && isfinite(mi) && isfinite(vi));
    }
    bad = block_sum(bad, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = bad;
}

// The runs of consecutive values with the same decay flag and the same bf16 copy (or none)
// (AdamWCuda::seg_end, seg_decay, seg_copy): the tensors, cut where a copy starts or ends.
void upload_segments(AdamWCuda& st, const std::vector<ParamTensor>& tensors) {
    if (!st.seg_end.empty()) return;
    const std::vector<AdamWCuda::Copy>& copies = st.copies;  // sorted, apart (adamw_copy_bf16)
    const long count = tensors.back().offset + tensors.back().size;
    if (!copies.empty() && copies.back().offset + copies.back().count > count)
        throw std::invalid_argument("adamw: a bf16 weight copy reaches past the " + std::to_string(count) +
                                    " parameters");
    std::vector<long> end, delta;
    std::vector<unsigned char> decay;
    const auto add = [&](long e, bool d, long dl) {
        if (!end.empty() && decay.back() == (unsigned char)d && delta.back() == dl) end.back() = e;
        else end.push_back(e), decay.push_back((unsigned char)d), delta.push_back(dl);
    };
    const bf16* base = st.copies.empty() ? nullptr : st.copy_base;
    size_t c = 0;
    for (const auto& t : tensors)
        for (long at = t.offset, stop = t.offset + t.size; at < stop;) {
            while (c < copies.size() && copies[c].offset + copies[c].count <= at) c++;
            if (c < copies.size() && copies[c].offset <= at) {  // inside copy c
                const long e = std::min(stop, copies[c].offset + copies[c].count);
                add(e, t.decay, (long)(copies[c].dst - base) - copies[c].offset);
                at = e;
            } else {
                const long e = c < copies.size() ? std::min(stop, copies[c].offset) : stop;
                add(e, t.decay, kNoCopy);
                at = e;
            }
        }
    st.seg_end.upload(end);
    st.seg_decay.upload(decay);
    st.seg_copy.upload(delta);
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

void clip_grad(float* g, long count, double norm, double max_norm) {
    if (max_norm <= 0) return;
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return;
    each(count, Scale{g, coef});
}

namespace {
long count_of(const std::vector<ParamTensor>& tensors) { return tensors.back().offset + tensors.back().size; }

// The update that adamw_prepare set up, on the moments when they exist (fresh: the first step's
// zero moments, read as null by the finiteness check).
AdamWUpdate update_of(AdamWCuda& st, float* param, const float* grad, bool fresh) {
    return AdamWUpdate{param,
                       fresh ? nullptr : st.m.data(),
                       fresh ? nullptr : st.v.data(),
                       grad,
                       st.seg_end.data(),
                       st.seg_decay.data(),
                       st.seg_copy.data(),
                       st.copy_base,
                       (int)st.seg_end.size(),
                       st.scalars.data(),
                       nullptr,
                       st.bound.empty() ? nullptr : st.bound.data()};
}
bool fresh(const AdamWCuda& st) { return (long)st.m.size() != st.count; }

void ensure_moments(AdamWCuda& st) {
    if (!fresh(st)) return;
    st.m.resize(st.count), st.v.resize(st.count);
    st.m.fill_bytes(0), st.v.fill_bytes(0);
    adamw_forget_bound(st);
}

// The update of every value in blocks, then the bound on the new weights and moments.
void update(AdamWCuda& st, const AdamWUpdate& u) {
    const long nb = (st.count + kNormBlock - 1) / kNormBlock;
    float* part = (float*)workspace((size_t)(3 * nb + 1) / 2);
    MHC_LAUNCH(k_adamw_update, (unsigned)nb, kThreads, u, st.count, part);
    MHC_LAUNCH(k_adamw_bound, 1, 32, part, nb, u.chk, st.bound.data());
}

// The number of values the update would make non-finite, into *out (device).
void nonfinite_count(const AdamWUpdate& u, long count, double* out) {
    const long nb = (count + kNormBlock - 1) / kNormBlock;
    double* part = workspace((size_t)nb);
    MHC_LAUNCH(k_adamw_nonfinite, (unsigned)nb, kThreads, u, count, part);
    MHC_LAUNCH(k_sum_in_order, 1, 32, part, nb, out);
}
}  // namespace

void adamw_prepare(AdamWCuda& st, const std::vector<ParamTensor>& tensors, double lr, double beta1, double beta2,
                   double weight_decay, double max_norm) {
    st.count = tensors.empty() ? 0 : count_of(tensors);
    if (!st.count) return;
    upload_segments(st, tensors);
    if (st.bound.empty()) adamw_forget_bound(st);
    const double step = (double)(st.step + 1);
    const AdamWCuda::Scalars s{(float)(1.0 - lr * weight_decay),
                               (float)beta1,
                               (float)beta2,
                               (float)(lr / (1.0 - std::pow(beta1, step))),
                               (float)std::sqrt(1.0 - std::pow(beta2, step)),
                               1e-8f,
                               max_norm};
    st.scalars.resize(1);
    st.scalars.upload(&s, 1);  // queued; CUDA stages the host value at the call
}

void adamw_step(AdamWCuda& st, float* param, const float* grad, const std::vector<ParamTensor>& tensors, double lr,
                double beta1, double beta2, double weight_decay) {
    adamw_prepare(st, tensors, lr, beta1, beta2, weight_decay, 0.0);
    if (!st.count) return;
    ensure_moments(st);
    const AdamWUpdate u = update_of(st, param, grad, false);
    st.step++;
    update(st, u);
}

void adamw_step_checked(AdamWCuda& st, float* param, const float* grad, const StepCheck* chk) {
    if (!st.count) return;
    ensure_moments(st);  // zero moments are what a first step reads, applied or not
    AdamWUpdate u = update_of(st, param, grad, false);
    u.chk = chk;
    update(st, u);
}

bool adamw_step_is_finite(AdamWCuda& st, const float* param, const float* grad, const std::vector<ParamTensor>& tensors,
                          double lr, double beta1, double beta2, double weight_decay) {
    adamw_prepare(st, tensors, lr, beta1, beta2, weight_decay, 0.0);
    if (!st.count) return true;
    static DeviceBuffer<double> out(1);
    nonfinite_count(update_of(st, const_cast<float*>(param), grad, fresh(st)), st.count, out.data());
    double bad = 0;
    out.download(&bad, 1);
    return bad == 0;
}

void adamw_nonfinite_into(AdamWCuda& st, const float* param, const float* grad, StepCheck* chk) {
    if (!st.count) return fill_bytes(&chk->bad, 0, sizeof(double));
    AdamWUpdate u = update_of(st, const_cast<float*>(param), grad, fresh(st));
    u.chk = chk;
    nonfinite_count(u, st.count, &chk->bad);
}

void adamw_download(const AdamWCuda& st, AdamW<float>& out) {
    out.m = st.m.download();
    out.v = st.v.download();
    out.step = st.step;
}

void adamw_copy_bf16(AdamWCuda& st, std::vector<AdamWCuda::Copy> copies) {
    std::sort(copies.begin(), copies.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
    for (size_t c = 0; c < copies.size(); c++)
        if (copies[c].offset < (c ? copies[c - 1].offset + copies[c - 1].count : 0) || copies[c].count < 0)
            throw std::invalid_argument("adamw: bf16 weight copies overlap or have a negative offset or size");
    st.copies = std::move(copies);
    st.copy_base = nullptr;
    for (const auto& c : st.copies)
        if (!st.copy_base || c.dst < st.copy_base) st.copy_base = c.dst;
    st.seg_end.resize(0), st.seg_decay.resize(0), st.seg_copy.resize(0);  // made again at the next step
}

void adamw_upload(AdamWCuda& st, const AdamW<float>& in) {
    st.m.upload(in.m);
    st.v.upload(in.v);
    st.step = in.step;
    adamw_forget_bound(st);
}

void adamw_forget_bound(AdamWCuda& st) {
    st.bound.resize(4);
    st.bound.fill_bytes(0);
}

}  // namespace mhc::cuda
