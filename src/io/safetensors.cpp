// safetensors reader (validating) and atomic writer.
#include "mhc/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "sys/file.h"

namespace mhc {

namespace {
const std::pair<const char*, DType> kDtypes[] = {
    {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
    {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
    {"U8", DType::U8},   {"BOOL", DType::BOOL}};

[[noreturn]] void bad(const std::string& path, const std::string& what) {
    throw std::runtime_error(path + ": " + what);
}

constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MiB of JSON is far beyond any real model

float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
float f16_to_float(uint16_t h) {
    const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 31, man = h & 1023;
    float v;
    if (exp == 0) v = std::ldexp((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = std::ldexp((float)(man | 1024), (int)exp - 25);
    return sign ? -v : v;
}
}  // namespace

const char* dtype_name(DType d) {
    for (const auto& [name, dt] : kDtypes)
        if (dt == d) return name;
    return "?";
}

int dtype_size(DType d) {
    switch (d) {
        case DType::F64: case DType::I64: return 8;
        case DType::F32: case DType::I32: return 4;
        case DType::F16: case DType::BF16: case DType::I16: return 2;
        default: return 1;
    }
}

int64_t StTensor::numel() const {
    // Overflow-checked: the reader bounds every shape it accepts, but a StTensor can also be built
    // by hand, and a wrapped product would size the conversions below wrongly.
    int64_t n = 1;
    for (auto d : shape)
        if (__builtin_mul_overflow(n, d, &n)) throw std::invalid_argument("tensor shape overflows int64");
    return n;
}

std::vector<double> StTensor::to_double() const {
    const int64_t n = numel();
    std::vector<double> out(n);
    const uint8_t* p = data.data();
    for (int64_t i = 0; i < n; i++) {
        switch (dtype) {
            case DType::F64: std::memcpy(&out[i], p + 8 * i, 8); break;
            case DType::F32: { float f; std::memcpy(&f, p + 4 * i, 4); out[i] = f; break; }
            case DType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_float(h); break; }
            case DType::F16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = f16_to_float(h); break; }
            case DType::I64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = (double)v; break; }
            case DType::I32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
            case DType::I16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
            case DType::I8: out[i] = (int8_t)p[i]; break;
            case DType::U8: case DType::BOOL: out[i] = p[i]; break;
        }
    }
    return out;
}

std::vector<float> StTensor::to_float() const {
    auto d = to_double();
    return std::vector<float>(d.begin(), d.end());
}

const StTensor& SafeTensors::at(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) bad(path, "no tensor '" + name + "'");
    return it->second;
}

namespace {

// Where the bytes come from: a file, read piece by piece so that a large checkpoint is never held
// twice, or a buffer already in memory. The parser sees only the size and reads inside [0, size).
struct Source {
    uint64_t size = 0;
    virtual void read(uint64_t off, void* dst, uint64_t n) const = 0;
    virtual ~Source() = default;
};

struct MemorySource : Source {
    std::string_view bytes;
    explicit MemorySource(std::string_view b) : bytes(b) { size = b.size(); }
    void read(uint64_t off, void* dst, uint64_t n) const override {
        if (n) std::memcpy(dst, bytes.data() + off, n);  // n = 0 may come with dst = nullptr
    }
};

// A file on disk (sys::File). A directory or a pipe has no size to check the header against.
struct FileSource : Source {
    sys::File f;
    explicit FileSource(const std::string& p) : f(p) {
        if (f.is_dir) bad(p, "is a directory, not a safetensors file");
        if (!f.is_regular) bad(p, "is not a regular file");
        size = (uint64_t)f.size;
    }
    void read(uint64_t off, void* dst, uint64_t n) const override { f.read_at((int64_t)off, dst, (int64_t)n); }
};

SafeTensors parse(const Source& src, const std::string& path, bool with_data = true) {
    const uint64_t fsize = src.size;
    if (fsize < 8) bad(path, "not a safetensors file (shorter than its 8-byte header length)");
    uint8_t lenb[8];
    src.read(0, lenb, 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenb[i];
    if (hlen > kMaxHeader || hlen > fsize - 8)
        bad(path, "header length " + std::to_string(hlen) + " exceeds the file (" +
                      std::to_string(fsize) + " bytes) or the 100 MiB limit");
    std::string header(hlen, '\0');
    src.read(8, header.data(), hlen);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(header);
    } catch (const std::exception&) {
        bad(path, "header is not valid JSON");
    }
    if (!j.is_object()) bad(path, "header is not a JSON object");
    const uint64_t dsize = fsize - 8 - hlen;
    SafeTensors st;
    st.path = path;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> todo;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& name = it.key();
        const auto& e = it.value();
        if (name == "__metadata__") {
            if (!e.is_object()) bad(path, "__metadata__ is not an object");
            for (auto m = e.begin(); m != e.end(); ++m) {
                if (!m.value().is_string()) bad(path, "__metadata__ value '" + m.key() + "' is not a string");
                st.metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
            bad(path, "tensor '" + name + "' lacks dtype, shape or data_offsets");
        StTensor t;
        const auto& dt = e["dtype"];
        bool found = false;
        if (dt.is_string())
            for (const auto& [dn, d] : kDtypes)
                if (dt.get<std::string>() == dn) t.dtype = d, found = true;
        if (!found) bad(path, "tensor '" + name + "' has an unknown dtype");
        const auto& sh = e["shape"];
        if (!sh.is_array() || sh.size() > 8) bad(path, "tensor '" + name + "' has a bad shape");
        constexpr uint64_t kMaxNumel = 1ull << 40;
        uint64_t numel = 1;
        for (const auto& d : sh) {
            if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t)kMaxNumel)
                bad(path, "tensor '" + name + "' has a bad shape");
            const uint64_t dim = (uint64_t)d.get<int64_t>();
            // Checked before multiplying: two dimensions of 2^32 would wrap to 0 and pass as an
            // empty tensor, and StTensor::numel() (the same running product, in int64) would
            // overflow. Bounding every running product keeps numel() exact, a later 0 included.
            if (dim != 0 && numel > kMaxNumel / dim) bad(path, "tensor '" + name + "' is impossibly large");
            t.shape.push_back((int64_t)dim);
            numel *= dim;
        }
        const auto& off = e["data_offsets"];
        if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            bad(path, "tensor '" + name + "' has bad data_offsets");
        const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
        if (b > en || en > dsize)
            bad(path, "tensor '" + name + "' data_offsets [" + std::to_string(b) + ", " +
                          std::to_string(en) + "] lie outside the data (" + std::to_string(dsize) +
                          " bytes); the file may be truncated");
        if (en - b != numel * (uint64_t)dtype_size(t.dtype))
            bad(path, "tensor '" + name + "' has " + std::to_string(en - b) +
                          " bytes, its shape and dtype need " +
                          std::to_string(numel * dtype_size(t.dtype)));
        ranges.push_back({b, en});
        st.tensors.emplace(name, std::move(t));
        todo.push_back({name, {b, en}});
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); i++)
        if (ranges[i].first < ranges[i - 1].second) bad(path, "tensors overlap in the data region");
    if (!with_data) return st;
    for (auto& [name, r] : todo) {
        StTensor& t = st.tensors[name];
        t.data.resize(r.second - r.first);
        src.read(8 + hlen + r.first, t.data.data(), t.data.size());
    }
    return st;
}

}  // namespace

SafeTensors safetensors_read(const std::string& path) { return parse(FileSource(path), path); }

SafeTensors safetensors_read_header(const std::string& path) { return parse(FileSource(path), path, false); }

SafeTensors safetensors_parse(std::string_view bytes, const std::string& name) {
    return parse(MemorySource(bytes), name);
}

void safetensors_write(const std::string& path, const SafeTensors& st) {
    nlohmann::json j = nlohmann::json::object();
    if (!st.metadata.empty()) j["__metadata__"] = st.metadata;
    uint64_t off = 0;
    for (const auto& [name, t] : st.tensors) {
        j[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape},
                   {"data_offsets", {off, off + t.data.size()}}};
        off += t.data.size();
    }
    std::string header = j.dump();
    header.append((8 - header.size() % 8) % 8, ' ');
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)header.size() >> (8 * i));
    // The tensors go out from where they are, piece by piece: no second copy of a large checkpoint.
    std::vector<std::string_view> pieces = {std::string_view((const char*)lenb, 8), header};
    for (const auto& [name, t] : st.tensors) pieces.emplace_back((const char*)t.data.data(), t.data.size());
    sys::write_file_atomic(path, pieces);
}

template <typename V> static StTensor make(DType d, const std::vector<V>& v, std::vector<int64_t> shape) {
    StTensor t;
    t.dtype = d;
    t.shape = std::move(shape);
    if ((int64_t)v.size() != t.numel()) throw std::invalid_argument("tensor size does not match its shape");
    t.data.resize(v.size() * sizeof(V));
    // An empty vector's data() may be null, and memcpy from null is undefined even for 0 bytes.
    if (!v.empty()) std::memcpy(t.data.data(), v.data(), t.data.size());
    return t;
}
StTensor st_from_floats(const std::vector<float>& v, std::vector<int64_t> s) { return make(DType::F32, v, s); }
StTensor st_from_doubles(const std::vector<double>& v, std::vector<int64_t> s) { return make(DType::F64, v, s); }
StTensor st_from_int64(const std::vector<int64_t>& v, std::vector<int64_t> s) { return make(DType::I64, v, s); }

}  // namespace mhc
