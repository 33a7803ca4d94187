#include "container/npy.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <string_view>

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
// numpy itself refuses headers over 10,000 bytes; our writer may emit a v2.0 header beyond
// 65,535. This bound only keeps a corrupt length from making us scan megabytes.
constexpr std::size_t kMaxHeaderLength = std::size_t{1} << 20;
// numpy 2's NPY_MAXDIMS.
constexpr std::size_t kMaxDims = 64;
constexpr std::size_t kUnicodeCharSize = 4;  // UTF-32

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
    while (pos_ < text_.size() && std::strchr(" \t\r\n", text_[pos_]) != nullptr) ++pos_;
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
    if (!rest.empty() && std::strchr("<>|=", rest.front()) != nullptr) {
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
  if (size < kMagicSize + kVersionSize || std::memcmp(data, kMagic, kMagicSize) != 0) {
    fail(context, "not an .npy array (bad magic)");
  }
  const uint8_t major = data[kMagicSize];
  const uint8_t minor = data[kMagicSize + 1];
  if (major < 1 || major > 3 || minor != 0) {
    fail(context, "unsupported version " + std::to_string(major) + "." + std::to_string(minor));
  }
  const std::size_t prefix = prefix_size(major);
  if (size < prefix) fail(context, "truncated");
  const uint8_t* length_field = data + kMagicSize + kVersionSize;
  const std::size_t length = major == 1 ? load_le16(length_field) : load_le32(length_field);
  if (length > kMaxHeaderLength) {
    fail(context, "header length " + std::to_string(length) + " is too large");
  }
  if (length > size - prefix) fail(context, "truncated");
  NpyHeader header =
      HeaderParser(std::string_view(reinterpret_cast<const char*>(data + prefix), length), context)
          .parse();
  header.header_size = prefix + length;
  return header;
}

}  // namespace tth::container
