// Batches of (input, target) windows drawn from a token array, randomly or sequentially.
#include <algorithm>
#include <stdexcept>

#include "mhc/data.h"
#include "mhc/rng.h"

namespace mhc {

namespace {

// Uniform in [0, n), n >= 1, without modulo bias: the lowest 2^64 mod n raw values are rejected,
// so the rest are a whole number of copies of [0, n).
uint64_t uniform_below(SplitMix64& rng, uint64_t n) {
    const uint64_t reject = (0 - n) % n;  // 2^64 mod n
    uint64_t x;
    do x = rng.next();
    while (x < reject);
    return x % n;
}

}  // namespace

Order order_from_string(const std::string& s) {
    if (s == "random") return Order::random;
    if (s == "sequential") return Order::sequential;
    throw std::invalid_argument("unknown batch order '" + s + "' (expected random or sequential)");
}

const char* order_name(Order o) { return o == Order::random ? "random" : "sequential"; }

Batcher::Batcher(const TokenData& data, int B, int T, Order order, uint64_t seed)
    : tok_(data.tokens), path_(data.path), vocab_((uint32_t)data.vocab_size), B_(B), T_(T), order_(order) {
    if (B < 1 || T < 1)
        throw std::invalid_argument(data.path + ": batch size B = " + std::to_string(B) +
                                    " and window T = " + std::to_string(T) + " must both be >= 1");
    if (data.vocab_size < 1)
        throw std::invalid_argument(data.path + ": vocab_size " + std::to_string(data.vocab_size) +
                                    " (the data's vocabulary must be set: every id is checked against it)");
    if (tok_.size() < (int64_t)T + 1)
        throw std::invalid_argument(data.path + ": " + std::to_string(tok_.size()) +
                                    " tokens, fewer than one window of T+1 = " + std::to_string(T + 1));
    st_.rng = seed;
    st_.next = 0;
}

void Batcher::copy_window(int64_t s, int32_t* in, int32_t* tg) const {
    // Each of the T+1 ids read once, so the check below sees every id the batch carries.
    tok_.copy(s, T_, in);
    std::copy(in + 1, in + T_, tg);
    tok_.copy(s + T_, 1, tg + T_ - 1);
    // The file was validated when loaded; a mapped one rewritten in place since may not be.
    for (int t = 0; t <= T_; t++) {
        const uint32_t id = (uint32_t)(t < T_ ? in[t] : tg[T_ - 1]);
        if (id >= vocab_)
            throw std::runtime_error(path_ + ": token " + std::to_string(id) + " at position " + std::to_string(s + t) +
                                     " is >= vocab_size " + std::to_string(vocab_) +
                                     (tok_.mapped() ? ": the file changed on disk after it was loaded" : ""));
    }
}

void Batcher::next(int32_t* inputs, int32_t* targets) {
    if (order_ == Order::random) {
        // Starts 0 .. len-T-1: the last one's target window ends exactly at the last token.
        // The generator's whole state is st_.rng, so a checkpoint holds it as one integer.
        const uint64_t nstarts = (uint64_t)(tok_.size() - T_);
        SplitMix64 rng(st_.rng);
        for (int b = 0; b < B_; b++) {
            const int64_t s = (int64_t)uniform_below(rng, nstarts);
            copy_window(s, inputs + (size_t)b * T_, targets + (size_t)b * T_);
        }
        st_.rng = rng.state;
        st_.next++;
        return;
    }
    const int64_t W = num_windows();
    int64_t w = st_.next;
    for (int b = 0; b < B_; b++) {
        copy_window(w * T_, inputs + (size_t)b * T_, targets + (size_t)b * T_);
        w = (w + 1 == W) ? 0 : w + 1;
    }
    st_.next = w;
}

void Batcher::restore(const BatcherState& s) {
    if (order_ == Order::sequential && (s.next < 0 || s.next >= num_windows()))
        throw std::invalid_argument("batcher state: window " + std::to_string(s.next) +
                                    " is outside the " + std::to_string(num_windows()) +
                                    " sequential windows of this data");
    if (order_ == Order::random && s.next < 0)
        throw std::invalid_argument("batcher state: negative batch count " + std::to_string(s.next));
    st_ = s;
}

}  // namespace mhc
