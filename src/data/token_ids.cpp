// Tokens: a stream of token ids at their stored width, in segments (mapped files or owned memory).
#include <algorithm>
#include <stdexcept>
#include <utility>

#include "mhc/data.h"

namespace mhc {

namespace {

template <class Id>
void widen_to(const unsigned char* p, int64_t n, int32_t* out) {
    const Id* ids = (const Id*)p;
    for (int64_t i = 0; i < n; i++) out[i] = (int32_t)ids[i];
}

template <class Id>
int64_t first_at_least(const unsigned char* p, int64_t n, uint32_t limit) {
    const Id* ids = (const Id*)p;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= limit) return i;
    return -1;
}

template <class V>
std::shared_ptr<const V> own(V&& v) {
    return std::make_shared<const V>(std::move(v));
}

}  // namespace

Tokens::Tokens(std::vector<uint32_t> ids) {
    auto v = own(std::move(ids));
    *this = Tokens(v, v->data(), (int64_t)v->size(), 4, false);
}
Tokens::Tokens(std::vector<uint16_t> ids) {
    auto v = own(std::move(ids));
    *this = Tokens(v, v->data(), (int64_t)v->size(), 2, false);
}
Tokens::Tokens(std::vector<uint8_t> ids) {
    auto v = own(std::move(ids));
    *this = Tokens(v, v->data(), (int64_t)v->size(), 1, false);
}

Tokens::Tokens(std::shared_ptr<const void> owner, const void* data, int64_t n, int width, bool mapped)
    : size_(n), width_(width), mapped_(mapped) {
    if (width != 1 && width != 2 && width != 4) throw std::invalid_argument("token width " + std::to_string(width));
    if (n > 0) segs_.push_back({std::move(owner), (const unsigned char*)data, 0, n});
}

Tokens::Tokens(Tokens&& o) noexcept
    : segs_(std::move(o.segs_)), size_(std::exchange(o.size_, 0)), width_(o.width_), mapped_(std::exchange(o.mapped_, false)) {
    o.segs_.clear();
}

Tokens& Tokens::operator=(Tokens&& o) noexcept {
    if (this != &o) {
        segs_ = std::move(o.segs_);
        o.segs_.clear();
        size_ = std::exchange(o.size_, 0);
        width_ = o.width_;
        mapped_ = std::exchange(o.mapped_, false);
    }
    return *this;
}

Tokens Tokens::concat(const std::vector<Tokens>& parts) {
    Tokens r;
    r.mapped_ = true;
    for (size_t k = 0; k < parts.size(); k++) {
        const Tokens& p = parts[k];
        if (k == 0) r.width_ = p.width_;
        if (p.width_ != r.width_)
            throw std::invalid_argument("tokens of " + std::to_string(r.width_) + " and " + std::to_string(p.width_) +
                                        " bytes cannot make one stream");
        for (const Segment& g : p.segs_) r.segs_.push_back({g.owner, g.data, r.size_ + g.start, g.size});
        r.size_ += p.size_;
        r.mapped_ = r.mapped_ && p.mapped_;
    }
    r.mapped_ = r.mapped_ && !parts.empty();
    return r;
}

const void* Tokens::data() const { return segs_.empty() ? nullptr : segs_[0].data; }

size_t Tokens::segment_of(int64_t i) const {
    // The last segment starting at or before i.
    auto it = std::upper_bound(segs_.begin(), segs_.end(), i, [](int64_t v, const Segment& g) { return v < g.start; });
    return (size_t)(it - segs_.begin()) - 1;
}

uint32_t Tokens::operator[](int64_t i) const {
    const Segment& g = segs_[segment_of(i)];
    const int64_t k = i - g.start;
    return width_ == 2 ? ((const uint16_t*)g.data)[k] : width_ == 4 ? ((const uint32_t*)g.data)[k] : g.data[k];
}

void Tokens::copy(int64_t begin, int64_t n, int32_t* out) const {
    for (size_t k = n > 0 ? segment_of(begin) : 0; n > 0; k++) {
        const Segment& g = segs_[k];
        const int64_t off = begin - g.start, m = std::min(n, g.size - off);
        const unsigned char* p = g.data + off * width_;
        switch (width_) {
            case 1: widen_to<uint8_t>(p, m, out); break;
            case 2: widen_to<uint16_t>(p, m, out); break;
            default: widen_to<uint32_t>(p, m, out); break;
        }
        out += m, begin += m, n -= m;
    }
}

Tokens Tokens::slice(int64_t begin, int64_t end) const {
    if (begin < 0 || end < begin || end > size_)
        throw std::out_of_range("tokens [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " +
                                std::to_string(size_));
    Tokens r;
    r.width_ = width_;
    r.mapped_ = mapped_;
    r.size_ = end - begin;
    for (const Segment& g : segs_) {
        const int64_t b = std::max(begin, g.start), e = std::min(end, g.start + g.size);
        if (b < e) r.segs_.push_back({g.owner, g.data + (b - g.start) * width_, b - begin, e - b});
    }
    return r;
}

std::vector<uint32_t> Tokens::to_vector() const {
    std::vector<uint32_t> v;
    v.reserve((size_t)size_);
    for (int64_t i = 0; i < size_; i++) v.push_back((*this)[i]);
    return v;
}

int64_t Tokens::find_at_least(uint32_t limit) const {
    for (const Segment& g : segs_) {
        const int64_t i = width_ == 1   ? first_at_least<uint8_t>(g.data, g.size, limit)
                          : width_ == 2 ? first_at_least<uint16_t>(g.data, g.size, limit)
                                        : first_at_least<uint32_t>(g.data, g.size, limit);
        if (i >= 0) return g.start + i;
    }
    return -1;
}

}  // namespace mhc
