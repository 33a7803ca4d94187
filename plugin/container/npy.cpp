#include "container/npy.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <string_view>
#include <utility>

#include "container/endian.h"

namespace tth::container {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = sizeof kMagic - 1;
// Magic, then major and minor version bytes, then the header length field.
constexpr std::size_t kVersionSize = 2;
constexpr std::size_t kLengthSizeV1 = sizeof(uint16_t);
constexpr std::size_t kLengthSizeV2 = sizeof(uint32_t);
// numpy pads header + prefix to this so that the data is aligned for memory mapping.
constexpr std::size_t kAlignment = 64;
// numpy 1.24 appends spaces so the first dimension can grow in place: 21 minus its digits.
constexpr std::size_t kGrowthAxisMaxDigits = 21;
// numpy 2's NPY_MAXDIMS.
constexpr std::size_t kMaxDims = 64;
// numpy's npy_intp: no dimension may exceed it.
constexpr uint64_t kMaxDim = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr std::size_t kUnicodeCharSize = 4;  // UTF-32
// Unicode's largest code point, and the surrogates, which UTF-8 and numpy both refuse.
constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr char32_t kFirstSurrogate = 0xD800;
constexpr char32_t kLastSurrogate = 0xDFFF;
constexpr bool kHostBigEndian = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;

struct DTypeInfo {
  DType dtype;
  char kind;             // numpy's dtype.kind
  std::size_t itemsize;  // 0 for kUnicode: 4 * chars, given in the descr
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, 'b', 1},      {DType::kInt8, 'i', 1},        {DType::kUInt8, 'u', 1},
    {DType::kInt16, 'i', 2},     {DType::kInt32, 'i', 4},       {DType::kInt64, 'i', 8},
    {DType::kFloat16, 'f', 2},   {DType::kFloat32, 'f', 4},     {DType::kFloat64, 'f', 8},
    {DType::kComplex64, 'c', 8}, {DType::kComplex128, 'c', 16}, {DType::kUnicode, 'U', 0},
};

const DTypeInfo& info(DType dtype) {
  for (const DTypeInfo& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  throw Error("npy: unknown DType " + std::to_string(static_cast<int>(dtype)));
}

// Bytes before the header text: magic, version, and a length field that widened in 2.0.
std::size_t prefix_size(uint8_t major) {
  return kMagicSize + kVersionSize + (major == 1 ? kLengthSizeV1 : kLengthSizeV2);
}

std::string error_text(const std::string& context, const std::string& message) {
  return context + ": npy header: " + message;
}

[[noreturn]] void fail(const std::string& context, const std::string& message) {
  throw FormatError(error_text(context, message));
}

std::string hex(uint64_t value) {
  char text[2 + 16 + 1];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

bool valid_code_point(char32_t code) {
  return code <= kMaxCodePoint && (code < kFirstSurrogate || code > kLastSurrogate);
}

// How far a header reaches, judged from its first `size` bytes. Once they include the length
// field, `known` is set and `size` is the whole header (prefix and declared text); before, `size`
// is how many bytes are needed to learn more (always more than given). Throws as soon as the
// bytes show a bad magic, an unsupported version or an oversized length.
struct HeaderExtent {
  bool known = false;
  std::size_t size = 0;
};

HeaderExtent header_extent(const uint8_t* data, std::size_t size, const std::string& context) {
  if (size > 0 && std::memcmp(data, kMagic, std::min(size, kMagicSize)) != 0) {
    fail(context, "not an .npy array (bad magic)");
  }
  if (size < kMagicSize + kVersionSize) return {false, kMagicSize + kVersionSize};
  const uint8_t major = data[kMagicSize];
  const uint8_t minor = data[kMagicSize + 1];
  if (major < 1 || major > 3 || minor != 0) {
    fail(context, "unsupported version " + std::to_string(major) + "." + std::to_string(minor));
  }
  const std::size_t prefix = prefix_size(major);
  if (size < prefix) return {false, prefix};
  const uint8_t* length_field = data + kMagicSize + kVersionSize;
  const std::size_t length = major == 1 ? load_le16(length_field) : load_le32(length_field);
  if (length > kMaxNpyHeaderLength) {
    fail(context, "header length " + std::to_string(length) + " is too large (at most " +
                      std::to_string(kMaxNpyHeaderLength) + ")");
  }
  return {true, prefix + length};
}

// Reverses the bytes of each `T`-sized unit of data[0, bytes).
template <class T, T (*kSwap)(T)>
void swap_units(uint8_t* data, uint64_t bytes) {
  for (uint64_t offset = 0; offset + sizeof(T) <= bytes; offset += sizeof(T)) {
    T unit;
    std::memcpy(&unit, data + offset, sizeof unit);
    unit = kSwap(unit);
    std::memcpy(data + offset, &unit, sizeof unit);
  }
}

uint16_t swap16(uint16_t v) { return __builtin_bswap16(v); }
uint32_t swap32(uint32_t v) { return __builtin_bswap32(v); }
uint64_t swap64(uint64_t v) { return __builtin_bswap64(v); }

// Brings the elements of a decoded array into host byte order; complex numbers are two floats.
void to_host_order(const NpyHeader& header, uint8_t* data) {
  if (header.big_endian == kHostBigEndian) return;
  const bool complex = header.dtype == DType::kComplex64 || header.dtype == DType::kComplex128;
  const std::size_t unit = complex ? header.itemsize / 2 : header.itemsize;
  const uint64_t bytes = header.data_size();
  switch (unit) {
    case 2:
      return swap_units<uint16_t, swap16>(data, bytes);
    case 4:
      return swap_units<uint32_t, swap32>(data, bytes);
    case 8:
      return swap_units<uint64_t, swap64>(data, bytes);
    default:
      return;  // single bytes have no order
  }
}

std::string shape_repr(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + (shape.size() == 1 ? ",)" : ")");  // Python's 1-tuple needs the comma.
}

// Recursive-descent parser for the subset of Python literals numpy headers use.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& context)
      : text_(text), context_(context) {}

  NpyHeader parse() {
    NpyHeader header;
    std::string descr;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (!consume('}')) {
      const std::string key = parse_string();
      expect(':');
      if (key == "descr" && !seen_descr) {
        if (peek() != '\'' && peek() != '"') fail("structured dtypes are not supported");
        descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order" && !seen_order) {
        header.fortran_order = parse_bool();
        seen_order = true;
      } else if (key == "shape" && !seen_shape) {
        header.shape = parse_shape();
        seen_shape = true;
      } else {
        fail("unexpected or repeated key '" + key + "'");
      }
      if (!consume(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the dictionary");
    if (!seen_descr || !seen_order || !seen_shape) {
      fail("needs the keys 'descr', 'fortran_order' and 'shape'");
    }
    set_dtype(descr, header);
    check_sizes(header);
    return header;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { container::fail(context_, message); }

  char peek() {
    skip_space();
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }
  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  void expect(char c) {
    if (!consume(c)) fail(std::string("expected '") + c + "' at offset " + std::to_string(pos_));
  }
  void skip_space() {
    // Not strchr: it would also match the NUL that ends its string, and numpy refuses NULs.
    while (pos_ < text_.size() &&
           std::string_view(" \t\r\n").find(text_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
  }

  std::string parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a string at offset " + std::to_string(pos_));
    const std::size_t close = text_.find(quote, ++pos_);
    if (close == std::string_view::npos) fail("unterminated string");
    std::string value(text_.substr(pos_, close - pos_));
    pos_ = close + 1;
    return value;
  }

  bool parse_bool() {
    for (const auto& [word, value] : {std::pair<std::string_view, bool>{"True", true},
                                      std::pair<std::string_view, bool>{"False", false}}) {
      skip_space();
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    fail("'fortran_order' must be True or False");
  }

  uint64_t parse_int() {
    skip_space();
    const std::size_t start = pos_;
    uint64_t value = 0;
    for (; pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; ++pos_) {
      const auto digit = static_cast<uint64_t>(text_[pos_] - '0');
      if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) fail("dimension overflows");
      value = value * 10 + digit;
    }
    if (pos_ == start) fail("expected a non-negative dimension at offset " + std::to_string(pos_));
    if (pos_ < text_.size() && (text_[pos_] == 'L' || text_[pos_] == 'l')) ++pos_;  // Python 2
    return value;
  }

  std::vector<uint64_t> parse_shape() {
    if (!consume('(')) fail("'shape' must be a tuple");
    std::vector<uint64_t> shape;
    while (!consume(')')) {
      if (shape.size() == kMaxDims) fail("more than " + std::to_string(kMaxDims) + " dimensions");
      shape.push_back(parse_int());
      if (shape.back() > kMaxDim) {
        fail("dimension " + std::to_string(shape.back()) + " exceeds numpy's maximum " +
             std::to_string(kMaxDim));
      }
      if (!consume(',')) {
        expect(')');
        break;
      }
    }
    return shape;
  }

  void set_dtype(const std::string& descr, NpyHeader& header) const {
    // descr = [byte order] kind [size]; '|' (not applicable) and '=' (native) mean little
    // endian on every platform this library supports.
    std::string_view rest = descr;
    if (!rest.empty() && std::string_view("<>|=").find(rest.front()) != std::string_view::npos) {
      header.big_endian = rest.front() == '>';
      rest.remove_prefix(1);
    }
    if (rest.empty()) fail("empty descr");
    const char kind = rest.front();
    rest.remove_prefix(1);
    std::size_t size = 0;
    bool size_ok = !rest.empty() && rest.size() <= std::numeric_limits<uint32_t>::digits10;
    for (char c : rest) {
      size_ok = size_ok && c >= '0' && c <= '9';
      size = size * 10 + static_cast<std::size_t>(c - '0');
    }
    if (kind == 'O') {
      throw NpyObjectArrayError(
          error_text(context_, "object arrays (pickles, descr '" + descr + "') are not supported"),
          header.shape);
    }
    const auto match = std::find_if(std::begin(kDTypes), std::end(kDTypes), [&](const auto& t) {
      return t.kind == kind && (t.itemsize == size || t.dtype == DType::kUnicode);
    });
    if (!size_ok || match == std::end(kDTypes)) fail("unsupported descr '" + descr + "'");
    header.dtype = match->dtype;
    header.itemsize = dtype_itemsize(match->dtype, size);
  }

  // Makes element_count() and data_size() safe to compute.
  void check_sizes(const NpyHeader& header) const {
    uint64_t count = 1;
    for (uint64_t dim : header.shape) {
      if (__builtin_mul_overflow(count, dim, &count)) fail("element count overflows");
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(count, uint64_t{header.itemsize}, &bytes)) {
      fail("data size overflows");
    }
  }

  std::string_view text_;
  const std::string& context_;
  std::size_t pos_ = 0;
};

}  // namespace

std::size_t dtype_itemsize(DType dtype, std::size_t unicode_chars) {
  return dtype == DType::kUnicode ? kUnicodeCharSize * unicode_chars : info(dtype).itemsize;
}

uint64_t NpyHeader::element_count() const {
  uint64_t count = 1;
  for (uint64_t dim : shape) count *= dim;
  return count;
}

std::string encode_npy_header(DType dtype, const std::vector<int64_t>& shape,
                              std::size_t unicode_chars) {
  for (int64_t dim : shape) {
    if (dim < 0) throw Error("encode_npy_header: negative dimension in shape " + shape_repr(shape));
  }
  const std::size_t itemsize = dtype_itemsize(dtype, unicode_chars);
  const char* byte_order = itemsize == 1 ? "|" : "<";  // numpy: '|' where order is moot.
  const std::string size = std::to_string(dtype == DType::kUnicode ? unicode_chars : itemsize);
  std::string dict = std::string("{'descr': '") + byte_order + info(dtype).kind + size +
                     "', 'fortran_order': False, 'shape': " + shape_repr(shape) + ", }";
  if (!shape.empty()) {
    const std::size_t digits = std::to_string(shape.front()).size();
    dict.append(kGrowthAxisMaxDigits - std::min(digits, kGrowthAxisMaxDigits), ' ');
  }
  // Version 1.0 unless its u16 length overflows. As in numpy, the padding is never empty: an
  // already aligned header still gets kAlignment spaces.
  for (const uint8_t major : {1, 2}) {
    const std::size_t prefix = prefix_size(major);
    const std::size_t text_size = dict.size() + 1;  // With the final '\n'.
    const std::size_t padding = kAlignment - (prefix + text_size) % kAlignment;
    const std::size_t length = text_size + padding;
    if (major == 1 && length > std::numeric_limits<uint16_t>::max()) continue;
    std::string out(prefix, '\0');
    std::memcpy(out.data(), kMagic, kMagicSize);
    auto* prefix_bytes = reinterpret_cast<uint8_t*>(out.data());
    prefix_bytes[kMagicSize] = major;
    if (major == 1) {
      store_le16(prefix_bytes + kMagicSize + kVersionSize, static_cast<uint16_t>(length));
    } else {
      store_le32(prefix_bytes + kMagicSize + kVersionSize, static_cast<uint32_t>(length));
    }
    return out + dict + std::string(padding, ' ') + '\n';
  }
  throw Error("encode_npy_header: header too long");
}

NpyHeader parse_npy_header(const uint8_t* data, std::size_t size, const std::string& context) {
  if (size < kMagicSize + kVersionSize) fail(context, "not an .npy array (bad magic)");
  const HeaderExtent extent = header_extent(data, size, context);
  if (!extent.known || extent.size > size) fail(context, "truncated");
  const std::size_t prefix = prefix_size(data[kMagicSize]);
  NpyHeader header = HeaderParser(std::string_view(reinterpret_cast<const char*>(data + prefix),
                                                   extent.size - prefix),
                                  context)
                         .parse();
  header.header_size = extent.size;
  return header;
}

// ---- NpyMemberReader ----

NpyMemberReader::NpyMemberReader(uint64_t member_size, std::string context, Allocate allocate)
    : member_size_(member_size), context_(std::move(context)), allocate_(std::move(allocate)) {
  if (!allocate_) throw Error("NpyMemberReader: " + context_ + ": allocate must be set");
}

void NpyMemberReader::fail(const std::string& message) const {
  throw FormatError(context_ + ": " + message);
}

void NpyMemberReader::feed(const uint8_t* data, std::size_t size) {
  if (stage_ == Stage::kFinished) {
    throw Error("NpyMemberReader: " + context_ + ": feed() after finish()");
  }
  if (size > member_size_ - received_) {
    fail("more than the member's " + std::to_string(member_size_) + " bytes");
  }
  received_ += size;
  while (size > 0 && stage_ == Stage::kHeader) {
    const std::size_t take = std::min(size, header_bytes_wanted() - header_bytes_.size());
    header_bytes_.insert(header_bytes_.end(), data, data + take);
    data += take;
    size -= take;
    if (header_bytes_wanted() == header_bytes_.size() && header_size_ != 0) start_data();
  }
  if (size == 0 || stage_ == Stage::kSkip) return;  // A pickle is checked by the CRC, not kept.
  // Cannot overflow the data: the member's size bounds `received_`, and the header's sizes add
  // up to the member's.
  if (header_.dtype == DType::kUnicode) {
    text_bytes_.insert(text_bytes_.end(), data, data + size);
  } else {
    std::memcpy(data_ + data_received_, data, size);
  }
  data_received_ += size;
}

std::size_t NpyMemberReader::header_bytes_wanted() {
  if (header_size_ == 0) {
    const HeaderExtent extent = header_extent(header_bytes_.data(), header_bytes_.size(), context_);
    if (!extent.known) return extent.size;
    if (extent.size > member_size_) {
      container::fail(context_, "truncated: it declares " + std::to_string(extent.size) +
                                    " bytes, the member holds " + std::to_string(member_size_));
    }
    header_size_ = extent.size;
  }
  return header_size_;
}

void NpyMemberReader::start_data() {
  try {
    header_ = parse_npy_header(header_bytes_.data(), header_bytes_.size(), context_);
  } catch (const NpyObjectArrayError& error) {
    if (!error.shape().empty()) throw;
    stage_ = Stage::kSkip;  // Chainer's None: absent, never unpickled
    header_bytes_ = {};
    return;
  }
  header_bytes_ = {};
  // Sizes agree before anything is allocated: the member's size bounds the allocation.
  const uint64_t data_bytes = member_size_ - header_.header_size;
  if (header_.data_size() != data_bytes) {
    fail("the header declares " + std::to_string(header_.data_size()) +
         " data bytes, the member holds " + std::to_string(data_bytes));
  }
  stage_ = Stage::kData;
  if (header_.dtype == DType::kUnicode) {
    if (header_.element_count() != 1) fail("only 0-d unicode arrays (texts) are supported");
    return;
  }
  data_ = allocate_(header_);
  if (data_ == nullptr && data_bytes != 0) {
    throw Error("NpyMemberReader: " + context_ + ": allocate returned no memory for " +
                std::to_string(data_bytes) + " bytes");
  }
}

NpyMemberReader::Result NpyMemberReader::finish() {
  if (stage_ == Stage::kFinished) {
    throw Error("NpyMemberReader: " + context_ + ": finish() called twice");
  }
  if (stage_ == Stage::kHeader) {
    parse_npy_header(header_bytes_.data(), header_bytes_.size(), context_);  // throws: incomplete
    container::fail(context_, "truncated");
  }
  if (received_ != member_size_) {
    fail("truncated: " + std::to_string(received_) + " of " + std::to_string(member_size_) +
         " bytes");
  }
  const Stage stage = stage_;
  stage_ = Stage::kFinished;
  if (stage == Stage::kSkip) return Result::kSkipped;
  if (header_.dtype == DType::kUnicode) {
    text_ = decode_npy_text(text_bytes_.data(), text_bytes_.size(), header_.big_endian, context_);
    text_bytes_ = {};
    return Result::kText;
  }
  if (data_ != nullptr) {
    to_host_order(header_, data_);
    if (header_.dtype == DType::kBool) {  // any non-zero byte is True to numpy
      for (uint64_t i = 0; i < data_received_; ++i) data_[i] = data_[i] != 0;
    }
  }
  return Result::kArray;
}

// ---- texts ----

std::string encode_npy_text(const std::string& utf8, const std::string& context) {
  const auto fail = [&](const std::string& why, std::size_t offset) {
    throw Error(context + " holds a text that is not valid UTF-8 (" + why + " at byte " +
                std::to_string(offset) + ")");
  };
  // The shortest code point each sequence length may encode; shorter ones are overlong.
  static constexpr char32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
  std::u32string code_points;
  for (std::size_t i = 0; i < utf8.size();) {
    const auto lead = static_cast<uint8_t>(utf8[i]);
    const std::size_t length = lead < 0x80           ? 1
                               : (lead >> 5) == 0x6  ? 2
                               : (lead >> 4) == 0xE  ? 3
                               : (lead >> 3) == 0x1E ? 4
                                                     : 0;
    if (length == 0) fail("invalid lead byte " + hex(lead), i);
    if (length > utf8.size() - i) fail("truncated sequence", i);
    char32_t code = length == 1 ? lead : lead & (0x7F >> length);
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<uint8_t>(utf8[i + k]);
      if ((next & 0xC0) != 0x80) fail("invalid continuation byte " + hex(next), i + k);
      code = (code << 6) | (next & 0x3F);
    }
    if (code < kMinimum[length]) fail("overlong form", i);
    if (!valid_code_point(code)) fail("code point " + hex(code), i);
    code_points.push_back(code);
    i += length;
  }
  const std::size_t chars = std::max<std::size_t>(1, code_points.size());  // numpy's '' is <U1
  std::string member = encode_npy_header(DType::kUnicode, {}, chars);
  const std::size_t header_size = member.size();
  member.resize(header_size + kUnicodeCharSize * chars, '\0');
  auto* data = reinterpret_cast<uint8_t*>(member.data() + header_size);
  for (std::size_t i = 0; i < code_points.size(); ++i) {
    store_le32(data + kUnicodeCharSize * i, static_cast<uint32_t>(code_points[i]));
  }
  return member;
}

std::string decode_npy_text(const uint8_t* data, std::size_t size, bool big_endian,
                            const std::string& context) {
  if (size % kUnicodeCharSize != 0) {
    throw FormatError(context + ": a unicode array of " + std::to_string(size) +
                      " bytes, not a multiple of " + std::to_string(kUnicodeCharSize));
  }
  const auto code_at = [&](std::size_t i) -> char32_t {
    const uint32_t code = load_le32(data + kUnicodeCharSize * i);
    return big_endian ? __builtin_bswap32(code) : code;
  };
  std::size_t chars = size / kUnicodeCharSize;
  while (chars > 0 && code_at(chars - 1) == 0) --chars;  // numpy pads with trailing NULs
  std::string out;
  out.reserve(chars);
  for (std::size_t i = 0; i < chars; ++i) {
    const char32_t code = code_at(i);
    if (!valid_code_point(code)) {
      throw FormatError(context + ": invalid code point " + hex(code) + " in a unicode array");
    }
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code >> 6)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (code >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (code >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }
  return out;
}

}  // namespace tth::container
