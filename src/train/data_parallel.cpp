// Data-parallel training with a sharded optimizer (see data_parallel.h): start-up checks, the
// shards, the bucketed gradient exchange, the step, evaluation and the optimizer for checkpoints.
#include "train/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "sys/file.h"
#include "train/guard.h"

namespace mhc {

namespace {

// The other ranks' pieces of this rank's shard sit in the inbox in rank order, skipping our own.
float* inbox_of(DataParallel& dp, int q) {
    const int slot = q < dp.comm->rank ? q : q - 1;
    return dp.inbox.data() + (size_t)slot * (size_t)(dp.hi - dp.lo);
}

// The gradient of [a, b) is complete on this rank: send each owner its piece, or, for the piece in
// our own shard, post the receives of the other ranks' pieces. Every rank posts the same ranges in
// the same order (the backward's), so the transfers between two ranks match up in order.
void post_exchange(DataParallel& dp, const float* G, long a, long b) {
    Comm& c = *dp.comm;
    const int N = c.size;
    int j = (int)(std::upper_bound(dp.bounds.begin(), dp.bounds.end(), a) - dp.bounds.begin()) - 1;
    for (; j < N && dp.bounds[j] < b; j++) {
        const long x = std::max(a, dp.bounds[j]), y = std::min(b, dp.bounds[j + 1]);
        if (x >= y) continue;
        if (j != c.rank) {
            c.send(j, G + x, y - x);
        } else {
            for (int q = 0; q < N; q++)
                if (q != c.rank) c.recv(q, inbox_of(dp, q) + (x - dp.lo), y - x);
        }
    }
    c.progress();
}

// Waits for the exchange, then G[lo, hi) := rank 0's + rank 1's + ... piece, in that order.
void finish_exchange(DataParallel& dp, float* G) {
    Comm& c = *dp.comm;
    c.wait_all();
    constexpr long kChunk = 4096;
    const long lo = dp.lo, hi = dp.hi;
#pragma omp parallel for schedule(static)
    for (long c0 = lo; c0 < hi; c0 += kChunk) {
        const long n = std::min(kChunk, hi - c0);
        float acc[kChunk];
        for (int q = 0; q < c.size; q++) {
            const float* src = q == c.rank ? G + c0 : inbox_of(dp, q) + (c0 - lo);
            if (q == 0) std::copy(src, src + n, acc);
            else
                for (long i = 0; i < n; i++) acc[i] += src[i];
        }
        std::copy(acc, acc + n, G + c0);
    }
}

std::vector<long> shard_counts(const DataParallel& dp) {
    std::vector<long> counts(dp.comm->size);
    for (int r = 0; r < dp.comm->size; r++) counts[r] = dp.bounds[r + 1] - dp.bounds[r];
    return counts;
}

}  // namespace

void dp_check_run(Comm& comm, const TrainConfig& cfg, const TrainOptions& opt, const TrainData& data) {
    const int N = comm.size, accum = cfg.gradient_accumulation_steps;
    if (accum % N != 0)
        throw std::invalid_argument(
            "gradient_accumulation_steps = " + std::to_string(accum) + " does not divide over " + std::to_string(N) +
            " ranks: each rank computes gradient_accumulation_steps / ranks micro-batches of every step (set it to a "
            "multiple of " + std::to_string(N) + ")");
    if (N > 1 && cfg.device != "cpu")
        throw std::invalid_argument("--device " + cfg.device + " trains in one process: data parallelism over " +
                                    std::to_string(N) + " ranks (mpirun) runs on the CPU (--device cpu)");
    if (N == 1) return;
    // What must be the same on every rank: the resolved config, the data (its files' sizes and
    // checksums, and how they were read), the options, the binary.
    std::string run = config_to_json(cfg).dump() + "\n" + data.record.dump() + "\n" + data.header + "\n" +
                      opt.out_dir + "\n" + opt.tokenizer + (opt.resume ? " resume" : "") +
                      (opt.resume_from_intact ? " from-intact" : "") + "\n" + opt.init_from;
    const char* hook = std::getenv("MHC_TEST_PERTURB_CONFIG_RANK");
    if (hook && std::atoi(hook) == comm.rank) run += " perturbed";
    const sys::Fingerprint exe = sys::file_fingerprint("/proc/self/exe");
    struct Identity {
        char run[32] = {}, exe[32] = {};
    } mine;
    std::snprintf(mine.run, sizeof mine.run, "%s", sys::crc32_of(run).c_str());
    std::snprintf(mine.exe, sizeof mine.exe, "%s", sys::crc32_of(std::to_string(exe.bytes) + exe.hash).c_str());
    std::vector<Identity> all(N);
    comm.allgather(&mine, all.data(), sizeof mine);
    for (int r = 1; r < N; r++)
        if (std::strcmp(all[r].exe, all[0].exe) != 0)
            throw std::runtime_error("rank " + std::to_string(r) + " runs another mhc binary than rank 0 "
                                     "(/proc/self/exe differs): run the same build on every rank");
    for (int r = 1; r < N; r++)
        if (std::strcmp(all[r].run, all[0].run) != 0)
            throw std::runtime_error("rank " + std::to_string(r) + " was started with another config, data or "
                                     "options than rank 0: every rank must run the same command");
}

DataParallel dp_start(Comm& comm, GPT<float>& m, AdamW<float>& adam, Engine& engine) {
    DataParallel dp;
    dp.comm = &comm;
    dp.engine = &engine;
    const int N = comm.size, r = comm.rank;
    const long P = (long)m.param.size(), nb = (P + kNormBlock - 1) / kNormBlock;
    dp.bounds.resize(N + 1);
    for (int q = 0; q <= N; q++) dp.bounds[q] = std::min(P, (long)((double)q * nb / N) * kNormBlock);
    dp.bounds[N] = P;
    dp.lo = dp.bounds[r], dp.hi = dp.bounds[r + 1];
    if (const char* hook = std::getenv("MHC_TEST_NONFINITE_UPDATE_RANK")) dp.overflow_rank = std::atoi(hook);
    if (N == 1) {
        dp.whole = &adam;
        return dp;
    }
    comm.broadcast(m.param.data(), P, 0);  // the same start on every rank, whatever each one computed
    const long S = dp.hi - dp.lo;
    for (const ParamTensor& t : m.params) {
        const long x = std::max(t.offset, dp.lo), y = std::min(t.offset + t.size, dp.hi);
        if (x >= y) continue;
        ParamTensor part = t;
        part.offset = x - dp.lo, part.size = y - x;
        dp.shard_tensors.push_back(part);
    }
    dp.shard.step = adam.step;
    if (adam.m.empty()) {
        dp.shard.m.assign(S, 0.0f), dp.shard.v.assign(S, 0.0f);
    } else {  // a checkpoint's whole moments: keep this rank's shard, free the rest
        dp.shard.m.assign(adam.m.begin() + dp.lo, adam.m.begin() + dp.hi);
        dp.shard.v.assign(adam.v.begin() + dp.lo, adam.v.begin() + dp.hi);
    }
    std::vector<float>().swap(adam.m);
    std::vector<float>().swap(adam.v);
    dp.inbox.assign((size_t)(N - 1) * (size_t)S, 0.0f);
    return dp;
}

namespace {

// The global batch's mean loss and gradient norm, the same bits on every rank. Each rank computes
// its own micro-batches; during the backward of its last one the pieces of the gradient go to the
// ranks that own them (post_exchange), so that on return G[lo, hi) holds the shard's gradient.
struct GlobalGrad {
    double loss = 0, norm = 0;
    std::chrono::steady_clock::time_point backward_end;  // for StepStats::optimizer_s
};
GlobalGrad global_gradient(DataParallel& dp, GPT<float>& m, Batcher& batches, const TrainConfig& cfg, int32_t* in,
                           int32_t* tg, bool force_nonfinite) {
    Comm& c = *dp.comm;
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    const int k = accum / c.size, first = c.rank * k;
    const long P = (long)m.param.size(), nb = (P + kNormBlock - 1) / kNormBlock;
    float* G = m.grad.data();
    gpt_zero_grad(m);
    // sums: each micro-batch's loss, then each gradient block's sum of squares; every entry comes
    // from one rank and is 0 on the others, so the sum over ranks is exact.
    std::vector<double> sums((size_t)(accum + nb), 0.0);
    for (int micro = 0; micro < accum; micro++) {
        batches.next(in, tg);  // every rank draws every micro-batch: one stream in any world size
        if (micro < first || micro >= first + k) continue;
        sums[micro] = gpt_forward(m, in, tg, B, T);
        if (micro == first + k - 1) m.on_grads_ready = [&](long a, long b) { post_exchange(dp, G, a, b); };
        gpt_backward(m, 1.0 / accum);
        m.on_grads_ready = nullptr;
    }
    const auto backward_end = std::chrono::steady_clock::now();
    finish_exchange(dp, G);
    if (force_nonfinite) {
        sums[first] = NAN;
        if (dp.hi > dp.lo) G[dp.lo] = NAN;
    }
    if (dp.hi > dp.lo) {
        const long b0 = dp.lo / kNormBlock, b1 = (dp.hi + kNormBlock - 1) / kNormBlock;
        grad_sumsq_blocks(G, P, b0, b1, sums.data() + accum + b0);
    }
    c.allreduce_sum(sums.data(), (long)sums.size());
    GlobalGrad g;
    g.backward_end = backward_end;
    for (int micro = 0; micro < accum; micro++) g.loss += sums[micro] / accum;  // train_step's order
    double ss = 0;
    for (long b = 0; b < nb; b++) ss += sums[accum + b];
    g.norm = std::sqrt(ss);
    return g;
}

}  // namespace

StepStats dp_train_step(DataParallel& dp, GPT<float>& m, Batcher& batches, const TrainConfig& cfg, long step,
                        int32_t* in, int32_t* tg, bool force_nonfinite) {
    if (dp.comm->size == 1) return train_step(*dp.engine, batches, cfg, step, in, tg, force_nonfinite);
    Comm& c = *dp.comm;
    float* G = m.grad.data();
    StepStats st;
    st.lr = lr_at(cfg, step);
    const bool overflow = force_nonfinite && dp.overflow_rank == c.rank && dp.hi > dp.lo;
    if (dp.overflow_rank >= 0) force_nonfinite = false;
    const GlobalGrad g = global_gradient(dp, m, batches, cfg, in, tg, force_nonfinite);
    st.loss = g.loss, st.grad_norm = g.norm;
    st.finite = std::isfinite(st.loss) && std::isfinite(st.grad_norm);
    st.nonfinite = !std::isfinite(st.loss) ? "loss" : !std::isfinite(st.grad_norm) ? "gradient norm" : "";
    if (st.finite) {
        clip_grad(G + dp.lo, dp.hi - dp.lo, st.grad_norm, cfg.grad_clip);
        if (overflow) G[dp.lo] = 1e30f;
        // train_step's check of the update, on each shard; one rank's overflow skips the step on
        // all of them, so the weights, the moments and the count of skipped steps stay in step.
        const bool ok = adamw_step_is_finite(dp.shard, m.param.data() + dp.lo, G + dp.lo, dp.shard_tensors, st.lr,
                                             cfg.beta1, cfg.beta2, cfg.weight_decay);
        st.finite = !comm_any(c, !ok);
        if (!st.finite) st.nonfinite = "update";
    }
    if (st.finite) {
        adamw_step(dp.shard, m.param.data() + dp.lo, G + dp.lo, dp.shard_tensors, st.lr, cfg.beta1, cfg.beta2,
                   cfg.weight_decay);
        if (dp.shard_tensors.empty()) dp.shard.step++;  // an empty shard still counts the step
        c.allgatherv(m.param.data(), shard_counts(dp));
    }
    st.optimizer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - g.backward_end).count();
    return st;
}

std::string dp_unsound_state(DataParallel& dp, GPT<float>& m, const Batcher& tb, const TrainConfig& cfg) {
    Comm& c = *dp.comm;
    if (c.size == 1) return unsound_state(*dp.engine, m, *dp.whole, tb, cfg);
    // The weights are the same on every rank; each rank checks the moments of its own shard.
    const std::string bad = comm_first_message(c, nonfinite_state(m, dp.shard_tensors, dp.shard));
    if (!bad.empty()) return bad;
    Batcher b = tb;
    std::vector<int32_t> in((size_t)cfg.batch_size * cfg.model.block_size), tg(in.size());
    const GlobalGrad g = global_gradient(dp, m, b, cfg, in.data(), tg.data(), false);
    return next_step_verdict({g.loss, g.norm});
}

double dp_evaluate(DataParallel& dp, GPT<float>& m, Batcher& b, int batches) {
    Comm& c = *dp.comm;
    if (c.size == 1) return evaluate(*dp.engine, b, batches);
    std::vector<int32_t> in((size_t)b.B() * b.T()), tg(in.size());
    std::vector<double> loss(batches, 0.0);
    for (int i = 0; i < batches; i++) {
        b.next(in.data(), tg.data());
        if (i % c.size == c.rank) loss[i] = gpt_forward(m, in.data(), tg.data(), b.B(), b.T());
    }
    c.allreduce_sum(loss.data(), batches);
    double sum = 0;
    for (double l : loss) sum += l;
    return batches ? sum / batches : NAN;
}

double dp_val_set_loss(DataParallel& dp, GPT<float>& m, const ValSet& vs) {
    if (dp.comm->size == 1) return val_set_loss(*dp.engine, vs);
    Batcher b = vs.first;
    return dp_evaluate(dp, m, b, vs.batches);
}

const AdamW<float>& dp_whole_optimizer(DataParallel& dp, AdamW<float>& buf) {
    Comm& c = *dp.comm;
    if (c.size == 1) return *dp.whole;
    buf = AdamW<float>();
    buf.step = dp.shard.step;
    if (c.rank == 0) buf.m.resize(dp.bounds.back()), buf.v.resize(dp.bounds.back());
    const std::vector<long> counts = shard_counts(dp);
    c.gatherv(dp.shard.m.data(), buf.m.data(), counts, 0);
    c.gatherv(dp.shard.v.data(), buf.v.data(), counts, 0);
    return buf;
}

long dp_optimizer_bytes(DataParallel& dp) {
    const AdamW<float>& a = dp.comm->size == 1 ? *dp.whole : dp.shard;
    return comm_max(*dp.comm, (long)((a.m.capacity() + a.v.capacity()) * sizeof(float)));
}

std::string dp_describe(DataParallel& dp, const TrainConfig& cfg) {
    const Comm& c = *dp.comm;
    long most = 0;
    for (int r = 0; r < c.size; r++) most = std::max(most, dp.bounds[r + 1] - dp.bounds[r]);
    char buf[256];
    std::snprintf(buf, sizeof buf, "data parallel: %d ranks (%s), %d of %d micro-batches each per step; AdamW "
                  "state %.2f MB per rank (sharded; %.2f MB in one process)", c.size, c.backend(),
                  cfg.gradient_accumulation_steps / c.size, cfg.gradient_accumulation_steps, most * 8e-6,
                  dp.bounds.back() * 8e-6);
    return buf;
}

}  // namespace mhc
