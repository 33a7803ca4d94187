// The .npy array format: headers encoded exactly as numpy 1.24 writes them and parsed from
// whatever any numpy version (or another writer) may have produced, members decoded as their
// bytes stream out of a zip, and texts (0-d unicode arrays) in both directions.
//
// An .npy file is the magic "\x93NUMPY", a version (1.0, 2.0 or 3.0), a little-endian header
// length (u16 for 1.0, u32 otherwise), a Python dict literal such as
// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and '\n' to a
// multiple of 64 bytes, then the raw elements. The encoder is strict (numpy's exact bytes, so
// files compare equal); the parser is tolerant of formatting (key order, quotes, whitespace,
// Python 2 `L` suffixes, byte-order characters) but bounds everything it reads and rejects what
// it cannot represent: extra keys, structured or object dtypes, overflowing sizes.
//
// NpyMemberReader owns everything else a reader must know about the bytes: it buffers no more
// header than the format allows, checks the sizes against the member before asking its caller
// for memory, fills that memory, and leaves the elements in host byte order. The Fortran order
// of the finished array is left to the caller, who gets `fortran_order`.
//
// Thread safety: the free functions are pure and thread-safe; an NpyMemberReader decodes one
// member and is used from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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
  std::vector<uint64_t> shape;  ///< Dimensions, each <= INT64_MAX; empty for 0-d (one element).
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
/// 'a.npy'") leading the message, for a truncated, oversized (declared length over
/// kMaxNpyHeaderLength) or malformed header, an unknown descr, a dimension over INT64_MAX
/// (numpy's npy_intp), or an element count or data size that overflows 64 bits;
/// NpyObjectArrayError for an object array.
NpyHeader parse_npy_header(const uint8_t* data, std::size_t size, const std::string& context);

/// The longest header text accepted (the declared HEADER_LEN). numpy itself refuses more than
/// 10,000 bytes; our writer may emit a v2.0 header beyond 65,535 (over 21,000 dimensions of 1).
/// The bound keeps a corrupt length from making a reader buffer or scan megabytes.
inline constexpr std::size_t kMaxNpyHeaderLength = std::size_t{1} << 20;

/// Decodes one .npy member (e.g. of an .npz) as its bytes arrive, in chunks of any size, into
/// memory its caller provides. The header is buffered (never more than the bytes it declares,
/// themselves at most kMaxNpyHeaderLength, and never past the member's size) and parsed; then
/// the header's size plus its data size must equal the member's size, and only then is the
/// `allocate` callback asked, once, for the array's destination. Texts (0-d unicode arrays) go
/// to a buffer of the reader's own that grows with the data received. A 0-d object array
/// (Chainer's `None`, a pickle) is skipped: its bytes are neither interpreted nor kept.
///
/// REQUIRES: `allocate` is non-empty, and returns memory for the whole array (a misuse of these
///   contracts, like feed() or finish() after finish(), is a tth::Error, never a FormatError).
///   After any exception the reader is spent: the member is to be abandoned.
/// ENSURES: after finish() returns kArray, the destination holds header().data_size() bytes of
///   elements in C or Fortran order (header().fortran_order) and host byte order (big-endian
///   files are swapped in place; complex numbers half by half), bools normalized to 0 or 1.
class NpyMemberReader {
 public:
  /// Returns where header.data_size() bytes of elements go (may be nullptr only when that is
  /// 0). Called at most once, never for a text or a skipped member. It may throw (e.g. when
  /// the array exceeds a limit of its own); the exception propagates out of feed().
  using Allocate = std::function<uint8_t*(const NpyHeader& header)>;

  /// What the member held, as finish() reports it.
  enum class Result {
    kArray,    ///< An array of a numeric or bool dtype, now in the allocated memory.
    kText,     ///< A 0-d unicode array: text() holds it as UTF-8.
    kSkipped,  ///< A 0-d object array (Chainer's None): nothing was kept.
  };

  /// Decodes a member of `member_size` uncompressed bytes. `context` (e.g. "file 'x.npz':
  /// member 'a.npy'") leads every error message. Throws tth::Error for an empty `allocate`.
  NpyMemberReader(uint64_t member_size, std::string context, Allocate allocate);

  /// Takes the next `size` bytes of the member. Throws tth::FormatError for a malformed,
  /// oversized or truncated header (as parse_npy_header), a header whose sizes disagree with
  /// the member's ("the header declares N data bytes, the member holds M"), a unicode array
  /// that is not 0-d, or bytes past the member's size; NpyObjectArrayError for an object array
  /// that is not 0-d.
  void feed(const uint8_t* data, std::size_t size);

  /// Ends the member: checks that all its bytes arrived, then finishes the data (see ENSURES;
  /// a text is decoded with decode_npy_text). Throws tth::FormatError for a truncated member
  /// or an invalid text.
  Result finish();

  /// The header as the file declares it (`big_endian` included, though finish() leaves the
  /// data in host order); meaningful once the allocation callback was called or finish()
  /// returned kArray or kText.
  const NpyHeader& header() const noexcept { return header_; }
  /// The text, after finish() returned kText.
  const std::string& text() const noexcept { return text_; }

 private:
  enum class Stage { kHeader, kData, kSkip, kFinished };

  std::size_t header_bytes_wanted();
  void start_data();
  [[noreturn]] void fail(const std::string& message) const;

  uint64_t member_size_;
  std::string context_;
  Allocate allocate_;
  Stage stage_ = Stage::kHeader;
  uint64_t received_ = 0;              // Bytes fed so far, header included.
  std::vector<uint8_t> header_bytes_;  // The header while it arrives.
  std::size_t header_size_ = 0;        // Its declared size, once the prefix is known; else 0.
  NpyHeader header_;
  uint8_t* data_ = nullptr;          // The caller's memory (numeric and bool arrays).
  std::vector<uint8_t> text_bytes_;  // UTF-32 data of a text.
  uint64_t data_received_ = 0;
  std::string text_;
};

/// Returns the whole member (header and data) of a 0-d `<U{n}` array holding `utf8`, as numpy
/// writes `np.array(text)`: n = the number of code points (1 for an empty text, numpy's
/// `<U1`), UTF-32LE. Throws tth::Error "<context> holds a text that is not valid UTF-8 (...)"
/// for malformed or truncated sequences, overlong forms, surrogates and values past U+10FFFF;
/// `context` names the text's owner, e.g. "npz_savefun: key 't'".
std::string encode_npy_text(const std::string& utf8, const std::string& context);

/// Returns the UTF-8 text held by the UTF-32 data `data[0, size)` of a unicode array (`size` a
/// multiple of 4), big- or little-endian, without numpy's trailing NUL padding (inner NULs
/// stay). Throws tth::FormatError, with `context` leading the message, for a size that is not
/// a multiple of 4 and for a surrogate or a value past U+10FFFF.
std::string decode_npy_text(const uint8_t* data, std::size_t size, bool big_endian,
                            const std::string& context);

}  // namespace tth::container
