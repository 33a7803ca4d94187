// The .npy array header: encoding it exactly as numpy 1.24 does, and parsing what any numpy
// version (or another writer) may have produced.
//
// An .npy file is the magic "\x93NUMPY", a version (1.0, 2.0 or 3.0), a little-endian header
// length (u16 for 1.0, u32 otherwise), a Python dict literal such as
// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and '\n' to a
// multiple of 64 bytes, then the raw elements. The encoder is strict (numpy's exact bytes, so
// files compare equal); the parser is tolerant of formatting (key order, quotes, whitespace,
// Python 2 `L` suffixes, byte-order characters) but bounds everything it reads and rejects what
// it cannot represent: extra keys, structured or object dtypes, overflowing sizes.
// Data layout beyond the header (byte swapping, Fortran order) is left to the caller, who gets
// `big_endian` and `fortran_order`. Pure functions: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tth/error.h"

namespace tth::container {

/// Element types an .npy member may hold (numpy descr in parentheses, little-endian form).
enum class DType {
  kBool,        ///< |b1
  kInt8,        ///< |i1
  kUInt8,       ///< |u1
  kInt16,       ///< <i2
  kInt32,       ///< <i4
  kInt64,       ///< <i8
  kFloat16,     ///< <f2
  kFloat32,     ///< <f4
  kFloat64,     ///< <f8
  kComplex64,   ///< <c8
  kComplex128,  ///< <c16
  kUnicode,     ///< <U{n}: n UTF-32 code units per element
};

/// Bytes per element of `dtype`; for kUnicode, 4 * `unicode_chars`.
std::size_t dtype_itemsize(DType dtype, std::size_t unicode_chars = 0);

/// A parsed .npy header.
struct NpyHeader {
  DType dtype = DType::kBool;   ///< Element type.
  std::size_t itemsize = 0;     ///< Bytes per element (4 * chars for kUnicode).
  bool big_endian = false;      ///< Elements are big-endian ('>'); the caller must swap.
  bool fortran_order = false;   ///< Elements are in column-major order.
  std::vector<uint64_t> shape;  ///< Dimensions; empty for a 0-d array (one element).
  std::size_t header_size = 0;  ///< Bytes before the data, magic included.

  /// Product of the dimensions (1 for 0-d). The parser guarantees it does not overflow.
  uint64_t element_count() const;
  /// element_count() * itemsize: the bytes of data following the header. Never overflows.
  uint64_t data_size() const { return element_count() * itemsize; }
};

/// Thrown by parse_npy_header for an object array (descr '|O', a pickle). Chainer saves `None`
/// as a 0-d object array, so a caller may treat an empty shape() as "absent"; nothing here
/// ever unpickles.
class NpyObjectArrayError : public FormatError {
 public:
  /// `message` is the full error text; `shape` the array's shape.
  NpyObjectArrayError(const std::string& message, std::vector<uint64_t> shape)
      : FormatError(message), shape_(std::move(shape)) {}
  /// The object array's shape; empty for 0-d.
  const std::vector<uint64_t>& shape() const noexcept { return shape_; }

 private:
  std::vector<uint64_t> shape_;
};

/// Returns the .npy header (magic to final '\n') numpy 1.24 writes for a C-order array of
/// `dtype` and `shape`; for kUnicode, `unicode_chars` gives the descr `<U{n}`. Version 1.0,
/// or 2.0 when the header would exceed 65,535 bytes. Throws tth::Error for a negative
/// dimension.
std::string encode_npy_header(DType dtype, const std::vector<int64_t>& shape,
                              std::size_t unicode_chars = 0);

/// Parses the header at the start of `data[0, size)` (the data may follow; `size` need only
/// cover the header). Throws tth::FormatError, with `context` (e.g. "file 'x.npz': member
/// 'a.npy'") leading the message, for a truncated, oversized or malformed header, an unknown
/// descr, or an element count or data size that overflows 64 bits; NpyObjectArrayError for an
/// object array.
NpyHeader parse_npy_header(const uint8_t* data, std::size_t size, const std::string& context);

}  // namespace tth::container
