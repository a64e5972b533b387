// mhc/safetensors.h — read and write safetensors files (the checkpoint format, SPEC §4).
// The reader validates everything before use: header size, JSON, dtypes, shapes, offsets inside the
// data region, sizes that match shapes, no overlapping tensors. Problems throw std::runtime_error
// with a one-line message that names the file and the problem.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace mhc {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };
const char* dtype_name(DType d);
int dtype_size(DType d);

struct StTensor {
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;  // little-endian raw bytes
    int64_t numel() const;
    std::vector<double> to_double() const;  // any numeric dtype; throws for others
    std::vector<float> to_float() const;
};

struct SafeTensors {
    std::map<std::string, std::string> metadata;  // "__metadata__"
    std::map<std::string, StTensor> tensors;
    bool has(const std::string& name) const { return tensors.count(name) != 0; }
    // The named tensor; throws "<file>: no tensor '<name>'" when absent.
    const StTensor& at(const std::string& name) const;
    std::string path;  // the file read, for messages
};

SafeTensors safetensors_read(const std::string& path);
// The same checks of the header and the file's size, but no tensor is read: metadata, names,
// dtypes and shapes (each StTensor's data empty).
SafeTensors safetensors_read_header(const std::string& path);

// The same reader on a whole file already in memory (embedders, the fuzz targets); `name` stands
// for the path in messages and in the result's `path`.
SafeTensors safetensors_parse(std::string_view bytes, const std::string& name);

// Writes atomically: a temporary file in the same directory, flushed and fsynced, then renamed
// over `path`. On failure the temporary file is removed and any existing `path` is left intact.
void safetensors_write(const std::string& path, const SafeTensors& st);

// Convenience constructors.
StTensor st_from_floats(const std::vector<float>& v, std::vector<int64_t> shape);
StTensor st_from_doubles(const std::vector<double>& v, std::vector<int64_t> shape);
StTensor st_from_int64(const std::vector<int64_t>& v, std::vector<int64_t> shape);

}  // namespace mhc
