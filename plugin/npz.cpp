#include "tth/npz.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "container/endian.h"
#include "container/npy.h"
#include "container/zip_reader.h"
#include "container/zip_writer.h"
#include "module_state.h"
#include "optimizer_state.h"
#include "text_util.h"
#include "tth/error.h"

namespace tth {

namespace {

using container::DType;

constexpr const char* kNpySuffix = ".npy";
// Lists the keys written as float32 that were bfloat16 (numpy has no bfloat16).
constexpr const char* kDtypesKey = "tth/npz_dtypes";
// Bounded chunks for tensors that cannot be written straight from their memory.
constexpr size_t kChunkBytes = size_t{4} << 20;
// .npy prefix: magic (6), version (2), header length (2 in v1, 4 in v2/v3).
constexpr size_t kNpyMagicAndVersion = 8;
// More header than this is refused by parse_npy_header anyway: never buffer more.
constexpr size_t kMaxHeaderBytes = size_t{1} << 20;

DType npy_dtype(const at::Tensor& tensor, const std::string& key) {
  switch (tensor.scalar_type()) {
    case at::kBool: return DType::kBool;
    case at::kChar: return DType::kInt8;
    case at::kByte: return DType::kUInt8;
    case at::kShort: return DType::kInt16;
    case at::kInt: return DType::kInt32;
    case at::kLong: return DType::kInt64;
    case at::kHalf: return DType::kFloat16;
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kFloat32;  // lossless; converted back on load
    case at::kDouble: return DType::kFloat64;
    case at::kComplexFloat: return DType::kComplex64;
    case at::kComplexDouble: return DType::kComplex128;
    default: break;
  }
  throw Error(fmt::format("npz_savefun: key '{}' has dtype {}, which numpy cannot hold", key,
                          c10::toString(tensor.scalar_type())));
}

at::ScalarType torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::kBool: return at::kBool;
    case DType::kInt8: return at::kChar;
    case DType::kUInt8: return at::kByte;
    case DType::kInt16: return at::kShort;
    case DType::kInt32: return at::kInt;
    case DType::kInt64: return at::kLong;
    case DType::kFloat16: return at::kHalf;
    case DType::kFloat32: return at::kFloat;
    case DType::kFloat64: return at::kDouble;
    case DType::kComplex64: return at::kComplexFloat;
    case DType::kComplex128: return at::kComplexDouble;
    case DType::kUnicode: break;
  }
  throw FormatError("npz: a unicode array is not a tensor");
}

// ---- UTF-8 <-> UTF-32 for numpy's unicode arrays ----

std::u32string utf8_to_utf32(const std::string& text, const std::string& key) {
  const auto fail = [&] {
    throw Error(fmt::format("npz_savefun: key '{}' holds a text that is not valid UTF-8", key));
  };
  std::u32string out;
  for (size_t i = 0; i < text.size();) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const int length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xE ? 3
                                      : (byte >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || i + length > text.size()) fail();
    char32_t code = length == 1 ? byte : byte & (0x7F >> length);
    for (int k = 1; k < length; ++k) {
      const auto next = static_cast<uint8_t>(text[i + k]);
      if ((next & 0xC0) != 0x80) fail();
      code = (code << 6) | (next & 0x3F);
    }
    // Overlong forms, surrogates and values past Unicode are not UTF-8 (and numpy refuses
    // such code points on the way back).
    static constexpr char32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[length] || (code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF) fail();
    out.push_back(code);
    i += static_cast<size_t>(length);
  }
  return out;
}

std::string utf32_to_utf8(const uint8_t* data, size_t chars, bool big_endian,
                          const std::string& context) {
  const auto code_at = [&](size_t i) {
    const uint32_t code = container::load_le32(data + 4 * i);
    return big_endian ? __builtin_bswap32(code) : code;
  };
  while (chars > 0 && code_at(chars - 1) == 0) --chars;  // numpy pads with trailing NULs
  std::string out;
  for (size_t i = 0; i < chars; ++i) {
    const uint32_t code = code_at(i);
    if (code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      throw FormatError(fmt::format("{}: invalid code point {:#x} in a unicode array", context, code));
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

// ---- writing ----

// Writes `tensor`'s elements in C order: straight from memory when it is a contiguous CPU
// tensor of a numpy dtype, else in chunks of about kChunkBytes (copied, moved to the CPU and
// converted one at a time).
void stream_tensor(container::ZipWriter& writer, const at::Tensor& tensor) {
  if (tensor.numel() == 0) return;
  const bool convert = tensor.scalar_type() == at::kBFloat16;
  if (tensor.device().is_cpu() && tensor.is_contiguous() && !convert) {
    writer.write(tensor.data_ptr(), tensor.nbytes());
    return;
  }
  auto write_piece = [&](const at::Tensor& piece) {
    at::Tensor host = piece.to(at::kCPU, convert ? at::kFloat : piece.scalar_type()).contiguous();
    writer.write(host.data_ptr(), host.nbytes());
  };
  if (tensor.dim() == 0 || tensor.nbytes() <= kChunkBytes) return write_piece(tensor);
  const int64_t rows = tensor.size(0);
  const size_t row_bytes = tensor.nbytes() / static_cast<size_t>(rows);
  if (row_bytes >= kChunkBytes) {
    for (int64_t row = 0; row < rows; ++row) stream_tensor(writer, tensor.select(0, row));
    return;
  }
  const auto step = static_cast<int64_t>(kChunkBytes / row_bytes);
  for (int64_t row = 0; row < rows; row += step) {
    write_piece(tensor.narrow(0, row, std::min(step, rows - row)));
  }
}

class Fd {
 public:
  Fd(const std::string& path, int flags) : fd_(::open(path.c_str(), flags, 0666)) {
    if (fd_ < 0) throw IOError("open", path, errno);
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void close(const std::string& path) {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw IOError("close", path, errno);
  }

 private:
  int fd_;
};

void write_member(container::ZipWriter& writer, const std::string& key, const std::string& header,
                  uint64_t data_bytes, const NpzOptions& options) {
  const auto method = options.compression_ == NpzCompression::kDeflate
                          ? container::Compression::kDeflate
                          : container::Compression::kStored;
  writer.begin_member(key + kNpySuffix, method, options.level_, header.size() + data_bytes);
  writer.write(header.data(), header.size());
}

void write_text(container::ZipWriter& writer, const std::string& key, const std::string& text,
                const NpzOptions& options) {
  const std::u32string code_points = utf8_to_utf32(text, key);
  const size_t chars = std::max<size_t>(1, code_points.size());  // numpy's '' is <U1
  std::vector<uint8_t> data(4 * chars, 0);
  for (size_t i = 0; i < code_points.size(); ++i) {
    container::store_le32(data.data() + 4 * i, static_cast<uint32_t>(code_points[i]));
  }
  write_member(writer, key, container::encode_npy_header(DType::kUnicode, {}, chars), data.size(),
               options);
  writer.write(data.data(), data.size());
  writer.end_member();
}

// ---- reading ----

// Fresh memory is faulted in page by page on first touch; in a VM that costs about 3 us per
// 4 KiB page (200 ms for 64 MiB here), ten times the copy itself. Large arrays therefore get
// 2 MiB-aligned memory advised for transparent huge pages, which cuts the faults 512-fold
// where the kernel offers them on request (its madvise mode).
at::Tensor empty_for_filling(const std::vector<int64_t>& shape, at::ScalarType dtype,
                             uint64_t bytes) {
  constexpr uint64_t kHugePage = uint64_t{2} << 20;
  if (bytes < 2 * kHugePage) return at::empty(shape, at::TensorOptions().dtype(dtype));
  const uint64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* memory = nullptr;
  if (::posix_memalign(&memory, kHugePage, rounded) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(memory, rounded, MADV_HUGEPAGE);  // advice only: ignoring a failure is right
#endif
  try {
    return at::from_blob(memory, shape, [](void* data) { std::free(data); },
                         at::TensorOptions().dtype(dtype));
  } catch (...) {
    std::free(memory);
    throw;
  }
}

// Receives one member's bytes: buffers the .npy header, then fills the array in place.
class MemberSink {
 public:
  MemberSink(const container::ZipEntry& entry, std::string context)
      : entry_(entry), context_(std::move(context)) {}

  void operator()(const uint8_t* data, size_t size) {
    while (size > 0) {
      if (skipped_) return;  // an object array's pickle: checked by the CRC, never kept
      if (!parsed_) {
        const size_t take = std::min(size, header_bytes_needed() - header_.size());
        header_.insert(header_.end(), data, data + take);
        data += take;
        size -= take;
        if (header_known_ && header_.size() >= header_bytes_needed()) parse();
        continue;
      }
      const size_t take = std::min(size, static_cast<size_t>(body_size_ - filled_));
      if (take == 0) throw FormatError(context_ + ": more data than the header declares");
      std::memcpy(body_ + filled_, data, take);
      filled_ += take;
      data += take;
      size -= take;
    }
  }

  // The value once the member was read (and its CRC checked); nullopt for an object array.
  std::optional<StateValue> finish() {
    if (skipped_) return std::nullopt;
    if (!parsed_ || filled_ != body_size_) throw FormatError(context_ + ": truncated array");
    if (header_info_.dtype == DType::kUnicode) {
      return utf32_to_utf8(text_.data(), text_.size() / 4, header_info_.big_endian, context_);
    }
    byteswap_if_needed();
    if (!header_info_.fortran_order || tensor_.dim() < 2) return tensor_;
    // Filled as the transposed shape: permute back into C order.
    std::vector<int64_t> order(static_cast<size_t>(tensor_.dim()));
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(order.size() - 1 - i);
    return tensor_.permute(order).contiguous();
  }

 private:
  // How many header bytes to buffer: the fixed prefix first, then the declared length.
  size_t header_bytes_needed() {
    if (header_.size() < kNpyMagicAndVersion + 2) return kNpyMagicAndVersion + 2;
    const size_t prefix = header_[6] == 1 ? kNpyMagicAndVersion + 2 : kNpyMagicAndVersion + 4;
    if (header_.size() < prefix) return prefix;
    const size_t length = prefix == kNpyMagicAndVersion + 2
                              ? container::load_le16(header_.data() + kNpyMagicAndVersion)
                              : container::load_le32(header_.data() + kNpyMagicAndVersion);
    header_known_ = true;
    // An oversized length is rejected by parse_npy_header from the prefix alone.
    if (length > kMaxHeaderBytes) return prefix;
    return std::min<uint64_t>(prefix + length, entry_.uncompressed_size);
  }

  void parse() {
    parsed_ = true;
    try {
      header_info_ = container::parse_npy_header(header_.data(), header_.size(), context_);
    } catch (const container::NpyObjectArrayError& error) {
      if (!error.shape().empty()) throw;
      skipped_ = true;  // Chainer's None: treat as absent, never unpickle
      return;
    }
    // Sizes agree before anything is allocated: the member's size bounds the allocation.
    if (header_info_.header_size + header_info_.data_size() != entry_.uncompressed_size) {
      throw FormatError(fmt::format("{}: the header declares {} data bytes, the member holds {}",
                                    context_, header_info_.data_size(),
                                    entry_.uncompressed_size - header_info_.header_size));
    }
    body_size_ = header_info_.data_size();
    if (header_info_.dtype == DType::kUnicode) {
      if (header_info_.element_count() != 1) {
        throw FormatError(context_ + ": only 0-d unicode arrays (texts) are supported");
      }
      text_.resize(body_size_);
      body_ = text_.data();
      return;
    }
    std::vector<int64_t> shape;
    for (uint64_t dim : header_info_.shape) {
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw FormatError(fmt::format("{}: dimension {} is too large", context_, dim));
      }
      shape.push_back(static_cast<int64_t>(dim));
    }
    if (header_info_.fortran_order) std::reverse(shape.begin(), shape.end());
    tensor_ = empty_for_filling(shape, torch_dtype(header_info_.dtype), body_size_);
    body_ = static_cast<uint8_t*>(tensor_.data_ptr());
  }

  void byteswap_if_needed() {
    if (!header_info_.big_endian) return;
    const bool complex = header_info_.dtype == DType::kComplex64 ||
                         header_info_.dtype == DType::kComplex128;
    const size_t unit = complex ? header_info_.itemsize / 2 : header_info_.itemsize;
    if (unit < 2) return;
    auto* bytes = static_cast<uint8_t*>(tensor_.data_ptr());
    for (size_t offset = 0; offset + unit <= body_size_; offset += unit) {
      std::reverse(bytes + offset, bytes + offset + unit);
    }
  }

  const container::ZipEntry& entry_;
  std::string context_;
  std::vector<uint8_t> header_;
  bool header_known_ = false;
  bool parsed_ = false;
  bool skipped_ = false;
  container::NpyHeader header_info_;
  at::Tensor tensor_;
  std::vector<uint8_t> text_;
  uint8_t* body_ = nullptr;
  uint64_t body_size_ = 0;
  uint64_t filled_ = 0;
};

// Whether `from` converts to `to` without losing values.
bool lossless(at::ScalarType from, at::ScalarType to) {
  if (from == to || from == at::kBool) return true;
  if (to == at::kBool) return false;
  const bool from_float = at::isFloatingType(from), to_float = at::isFloatingType(to);
  const bool to_complex = at::isComplexType(to);
  const auto size = [](at::ScalarType t) { return c10::elementSize(t); };
  if (at::isComplexType(from)) return to_complex && size(to) > size(from);
  if (from_float) {
    if (to_complex) return size(to) / 2 >= size(from);
    // float16 and bfloat16 each fit float32; neither fits the other.
    return to_float && size(to) > size(from);
  }
  // Integers.
  const bool from_unsigned = from == at::kByte;
  if (to_float || to_complex) {
    const size_t mantissa_bytes = to_complex ? size(to) / 2 : size(to);
    return size(from) < mantissa_bytes || (size(from) == 4 && mantissa_bytes == 8);
  }
  if (to == at::kByte) return false;
  return size(to) > size(from) || (!from_unsigned && size(to) == size(from));
}

// The file's entries under the options' prefix, renamed, without ignored names.
StateDict select(const StateDict& file, const std::string& path, const NpzLoadOptions& options) {
  StateDict selected;
  for (const auto& [key, value] : file) {
    if (key.compare(0, options.prefix_.size(), options.prefix_) != 0) continue;
    const std::string name = key.substr(options.prefix_.size());
    if (std::find(options.ignore_.begin(), options.ignore_.end(), name) != options.ignore_.end()) {
      continue;
    }
    const std::string target = options.key_map_ ? options.key_map_(name) : name;
    if (selected.contains(target)) {
      throw StateError(fmt::format("load_npz '{}': keys map to '{}' twice (second: '{}')", path,
                                   target, key));
    }
    selected.set(target, value);
  }
  return selected;
}

}  // namespace

SaveFunction npz_savefun(NpzOptions options) {
  if (options.level_ < -1 || options.level_ > 9) {
    throw Error(fmt::format("NpzOptions: level must be -1 or 0..9, got {}", options.level_));
  }
  return [options](const std::string& path, const StateDict& state) {
    Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
    container::ZipWriter writer(fd.get(), path);
    nlohmann::json converted = nlohmann::json::object();
    for (const auto& [key, value] : state) {
      if (const auto* text = std::get_if<std::string>(&value)) {
        write_text(writer, key, *text, options);
        continue;
      }
      const at::Tensor& tensor = std::get<at::Tensor>(value);
      const DType dtype = npy_dtype(tensor, key);
      if (tensor.scalar_type() == at::kBFloat16) converted[key] = "bfloat16";
      const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * container::dtype_itemsize(dtype);
      write_member(writer, key, container::encode_npy_header(dtype, tensor.sizes().vec()), bytes,
                   options);
      stream_tensor(writer, tensor);
      writer.end_member();
    }
    if (!converted.empty()) write_text(writer, kDtypesKey, converted.dump(), options);
    writer.finish();
    fd.close(path);
  };
}

StateDict read_npz(const std::string& path) {
  container::ZipReader reader(path);
  StateDict state;
  for (const auto& entry : reader.entries()) {
    const std::string context = fmt::format("{}: member '{}'", reader.label(), entry.name);
    if (!ends_with(entry.name, kNpySuffix)) {
      throw FormatError(context + ": not an .npy array (an npz holds only .npy members)");
    }
    MemberSink sink(entry, context);
    reader.read(entry, [&sink](const uint8_t* data, size_t size) { sink(data, size); });
    if (auto value = sink.finish()) {
      state.set(entry.name.substr(0, entry.name.size() - std::strlen(kNpySuffix)), std::move(*value));
    }
  }
  if (state.contains(kDtypesKey)) {
    nlohmann::json converted;
    try {
      converted = nlohmann::json::parse(state.text(kDtypesKey));
    } catch (const nlohmann::json::exception& error) {
      throw FormatError(fmt::format("{}: '{}' is not JSON: {}", reader.label(), kDtypesKey,
                                    error.what()));
    }
    for (const auto& item : converted.items()) {
      if (item.value() == "bfloat16" && state.contains(item.key())) {
        state.set(item.key(), state.tensor(item.key()).to(at::kBFloat16));
      }
    }
    state.erase(kDtypesKey);
  }
  return state;
}

LoadFunction npz_loadfun() { return read_npz; }

std::string chainer_names(const std::string& key) {
  static const std::vector<std::pair<std::string, std::string>> kLeaves = {
      {"W", "weight"},  {"b", "bias"},           {"gamma", "weight"},
      {"beta", "bias"}, {"avg_mean", "running_mean"}, {"avg_var", "running_var"}};
  std::string name = key;
  std::replace(name.begin(), name.end(), '/', '.');
  const size_t dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  for (const auto& [chainer, torch] : kLeaves) {
    if (leaf == chainer) return name.substr(0, name.size() - leaf.size()) + torch;
  }
  return name;
}

void load_npz(const std::string& path, torch::nn::Module& module, const NpzLoadOptions& options) {
  const StateDict selected = select(read_npz(path), path, options);
  const StateDict expected = module_state_dict(module);
  StateDict converted;
  for (const auto& [key, value] : expected) {
    if (!selected.contains(key)) {
      if (!options.strict_) continue;
      throw StateError(fmt::format("load_npz '{}': key '{}' of the module is not in the file "
                                   "(after prefix '{}' and the key map)",
                                   path, key, options.prefix_));
    }
    const at::Tensor& target = std::get<at::Tensor>(value);
    const StateValue& given = selected.at(key);
    const auto* tensor = std::get_if<at::Tensor>(&given);
    if (tensor == nullptr || tensor->sizes() != target.sizes()) {
      throw StateError(fmt::format("load_npz '{}': key '{}' holds {} but the module has {}", path,
                                   key, describe(given), describe(target)));
    }
    if (!lossless(tensor->scalar_type(), target.scalar_type())) {
      throw StateError(fmt::format("load_npz '{}': key '{}' holds {} values, which do not convert "
                                   "to {} without loss",
                                   path, key, c10::toString(tensor->scalar_type()),
                                   c10::toString(target.scalar_type())));
    }
    converted.set(key, tensor->to(target.scalar_type()));
  }
  if (options.strict_) {
    for (const auto& entry : selected) {
      if (!expected.contains(entry.first)) {
        throw StateError(fmt::format("load_npz '{}': key '{}' of the file has no place in the "
                                     "module (ignore it, or load non-strictly)",
                                     path, entry.first));
      }
    }
  }
  load_module_state(module, converted);
}

void load_npz(const std::string& path, torch::optim::Optimizer& optimizer,
              const NpzLoadOptions& options) {
  const StateDict selected = select(read_npz(path), path, options);
  check_optimizer_state(optimizer, selected, options.strict_, "load_npz '" + path + "': ");
  load_optimizer_state(optimizer, selected);
}

}  // namespace tth
