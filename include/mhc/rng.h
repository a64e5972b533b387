// mhc/rng.h — the one seeded generator of the engine: weight init, data order, mhc-lite
// permutations, sampling and the bench's random tokens all draw from it.
#pragma once
#include <cstdint>

namespace mhc {

// splitmix64 (Steele, Lea & Flood): a 64-bit state and a fixed mix, so the state is one integer a
// checkpoint can hold, and the sequence is the same on every platform and compiler (unlike the
// std:: distributions, whose outputs are implementation-defined).
struct SplitMix64 {
    uint64_t state = 0;
    explicit SplitMix64(uint64_t seed = 0) : state(seed) {}
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1), 53 bits
};

}  // namespace mhc
