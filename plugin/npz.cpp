#include "tth/npz.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "check_argument.h"
#include "container/npy.h"
#include "container/parallel_deflate.h"
#include "container/zip_reader.h"
#include "container/zip_writer.h"
#include "empty_for_filling.h"
#include "load_weights_impl.h"
#include "module_state.h"
#include "optimizer_state.h"
#include "text_util.h"
#include "training_state.h"
#include "tth/error.h"
#include "tth/state_layout.h"

namespace tth {

namespace {

using container::DType;

constexpr const char* kNpySuffix = ".npy";
// Lists the keys written as float32 that were bfloat16 (numpy has no bfloat16).
constexpr const char* kDtypesKey = "tth/npz_dtypes";
// Bounded chunks for tensors that cannot be written straight from their memory.
constexpr size_t kChunkBytes = size_t{4} << 20;

DType npy_dtype(const at::Tensor& tensor, const std::string& key) {
  switch (tensor.scalar_type()) {
    case at::kBool:
      return DType::kBool;
    case at::kChar:
      return DType::kInt8;
    case at::kByte:
      return DType::kUInt8;
    case at::kShort:
      return DType::kInt16;
    case at::kInt:
      return DType::kInt32;
    case at::kLong:
      return DType::kInt64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kFloat:
      return DType::kFloat32;
    case at::kBFloat16:
      return DType::kFloat32;  // lossless; converted back on load
    case at::kDouble:
      return DType::kFloat64;
    case at::kComplexFloat:
      return DType::kComplex64;
    case at::kComplexDouble:
      return DType::kComplex128;
    default:
      break;
  }
  throw Error(fmt::format("npz_savefun: key '{}': dtype {} has no numpy equivalent", key,
                          c10::toString(tensor.scalar_type())));
}

at::ScalarType torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return at::kBool;
    case DType::kInt8:
      return at::kChar;
    case DType::kUInt8:
      return at::kByte;
    case DType::kInt16:
      return at::kShort;
    case DType::kInt32:
      return at::kInt;
    case DType::kInt64:
      return at::kLong;
    case DType::kFloat16:
      return at::kHalf;
    case DType::kFloat32:
      return at::kFloat;
    case DType::kFloat64:
      return at::kDouble;
    case DType::kComplex64:
      return at::kComplexFloat;
    case DType::kComplex128:
      return at::kComplexDouble;
    case DType::kUnicode:
      break;
  }
  throw FormatError("npz: a unicode array is not a tensor");
}

// ---- writing ----

// Writes `tensor`'s elements in C order: straight from memory when it is a contiguous CPU
// tensor of a numpy dtype, else in chunks of about kChunkBytes (copied, moved to the CPU and
// converted one at a time).
void stream_tensor(container::ZipWriter& writer, const at::Tensor& given) {
  if (given.numel() == 0) return;
  // A lazy conjugate or negation is a flag beside unchanged memory: apply it first.
  const at::Tensor tensor = given.resolve_conj().resolve_neg();
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

// Starts the stored member of `key` with `start` (its header, or all of it), `more` bytes to
// follow.
void write_member(container::ZipWriter& writer, const std::string& key, const std::string& start,
                  uint64_t more) {
  writer.begin_member(key + kNpySuffix, container::Compression::kStored,
                      container::ZipWriter::kDefaultLevel, start.size() + more);
  writer.write(start.data(), start.size());
}

void write_text(container::ZipWriter& writer, const std::string& key, const std::string& text) {
  const std::string member =
      container::encode_npy_text(text, fmt::format("npz_savefun: key '{}'", key));
  write_member(writer, key, member, 0);
  writer.end_member();
}

// The deflate members, compressed on all cores by `deflater` and written in order.
void add_deflated_text(container::ParallelDeflateWriter& deflater, const std::string& key,
                       const std::string& text) {
  auto member = std::make_shared<const std::string>(
      container::encode_npy_text(text, fmt::format("npz_savefun: key '{}'", key)));
  // Small, and four bytes a character: compressed whole, header included.
  deflater.add({key + kNpySuffix, {}, member->data(), member->size(), member});
}

// A contiguous CPU tensor is compressed from its own memory; any other is first converted as
// stream_tensor converts it, whole, since libdeflate compresses one buffer per member.
void add_deflated_tensor(container::ParallelDeflateWriter& deflater, const std::string& key,
                         std::string header, const at::Tensor& given) {
  const at::Tensor tensor = given.resolve_conj().resolve_neg();  // as stream_tensor does
  at::Tensor host = tensor;
  if (tensor.numel() > 0 && (!tensor.device().is_cpu() || !tensor.is_contiguous() ||
                             tensor.scalar_type() == at::kBFloat16)) {
    const auto dtype = tensor.scalar_type() == at::kBFloat16 ? at::kFloat : tensor.scalar_type();
    host = tensor.to(at::kCPU, dtype).contiguous();
  }
  auto owner = std::make_shared<const at::Tensor>(host);
  const void* data = host.numel() > 0 ? host.data_ptr() : nullptr;
  deflater.add({key + kNpySuffix, std::move(header), data, host.nbytes(), std::move(owner)});
}

// ---- reading ----

// Reads one member into a value; nullopt for Chainer's None (a 0-d object array). The container
// checks the sizes before the tensor is allocated and leaves the elements in host byte order.
std::optional<StateValue> read_member(const container::ZipReader& reader,
                                      const container::ZipEntry& entry,
                                      const std::string& context) {
  at::Tensor tensor;
  container::NpyMemberReader member(
      entry.uncompressed_size, context, [&tensor](const container::NpyHeader& header) {
        // A Fortran-order array is filled as its transposed shape, then permuted back.
        std::vector<int64_t> shape(header.shape.begin(), header.shape.end());
        if (header.fortran_order) std::reverse(shape.begin(), shape.end());
        tensor = empty_for_filling(shape, torch_dtype(header.dtype), header.data_size());
        return static_cast<uint8_t*>(tensor.data_ptr());
      });
  reader.read(entry, [&member](const uint8_t* data, size_t size) { member.feed(data, size); });
  switch (member.finish()) {
    case container::NpyMemberReader::Result::kSkipped:
      return std::nullopt;
    case container::NpyMemberReader::Result::kText:
      return member.text();
    case container::NpyMemberReader::Result::kArray:
      break;
  }
  if (!member.header().fortran_order || tensor.dim() < 2) return tensor;
  std::vector<int64_t> order(static_cast<size_t>(tensor.dim()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(order.size() - 1 - i);
  return tensor.permute(order).contiguous();
}

constexpr const char* kLoadNpz = "load_npz";

}  // namespace

SaveFunction npz_savefun(NpzOptions options) {
  check_argument(options.level() >= container::ZipWriter::kDefaultLevel &&
                     options.level() <= container::ZipWriter::kMaxLevel,
                 "NpzOptions", "level", "must be -1 or 0..9", options.level());
  check_argument(options.threads() >= 0, "NpzOptions", "threads", "must be >= 0",
                 options.threads());
  return [options](const std::string& path, const StateDict& state) {
    File file(path, O_WRONLY | O_CREAT | O_TRUNC);
    container::ZipWriter writer(file);
    // Deflate members are compressed on worker threads; the stored ones stream from memory.
    std::optional<container::ParallelDeflateWriter> deflater;
    if (options.compression() == NpzCompression::kDeflate) {
      deflater.emplace(writer, options.level(), static_cast<unsigned>(options.threads()));
    }
    const auto add_text = [&](const std::string& key, const std::string& text) {
      if (deflater) return add_deflated_text(*deflater, key, text);
      write_text(writer, key, text);
    };
    nlohmann::json converted = nlohmann::json::object();
    for (const auto& [key, value] : state) {
      if (const auto* text = std::get_if<std::string>(&value)) {
        add_text(key, *text);
        continue;
      }
      const at::Tensor& tensor = std::get<at::Tensor>(value);
      const DType dtype = npy_dtype(tensor, key);
      if (tensor.scalar_type() == at::kBFloat16) converted[key] = "bfloat16";
      std::string header = container::encode_npy_header(dtype, tensor.sizes().vec());
      if (deflater) {
        add_deflated_tensor(*deflater, key, std::move(header), tensor);
        continue;
      }
      const uint64_t bytes =
          static_cast<uint64_t>(tensor.numel()) * container::dtype_itemsize(dtype);
      write_member(writer, key, header, bytes);
      stream_tensor(writer, tensor);
      writer.end_member();
    }
    if (!converted.empty()) add_text(kDtypesKey, converted.dump());
    if (deflater) deflater->finish();
    writer.finish();
    file.close();
  };
}

StateDict read_npz(const std::string& path) { return read_npz(path, {}); }

StateDict read_npz(const std::string& path, const std::function<bool(const std::string&)>& wanted) {
  container::ZipReader reader(path);
  StateDict state;
  for (const auto& entry : reader.entries()) {
    const std::string context = fmt::format("{}: member '{}'", reader.label(), entry.name);
    if (!ends_with(entry.name, kNpySuffix)) {
      throw FormatError(context + ": not an .npy array (an npz holds only .npy members)");
    }
    const std::string key = entry.name.substr(0, entry.name.size() - std::strlen(kNpySuffix));
    if (wanted && key != kDtypesKey && !wanted(key)) continue;
    if (auto value = read_member(reader, entry, context)) state.set(key, std::move(*value));
  }
  if (state.contains(kDtypesKey)) {
    nlohmann::json converted;
    try {
      converted = nlohmann::json::parse(state.text(kDtypesKey));
    } catch (const nlohmann::json::exception& error) {
      throw FormatError(
          fmt::format("{}: '{}' is not JSON: {}", reader.label(), kDtypesKey, error.what()));
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

LoadFunction npz_loadfun() {
  return [](const std::string& path) { return read_npz(path); };
}

IncompatibleKeys load_npz(const std::string& path, torch::nn::Module& module,
                          const NpzLoadOptions& options) {
  return load_module_weights(read_npz(path), path, module, options, kLoadNpz);
}

IncompatibleKeys load_npz(const std::string& path, torch::optim::Optimizer& optimizer,
                          const NpzLoadOptions& options) {
  check_supported_optimizer(optimizer, kLoadNpz);
  StateDict selected = select_weights(read_npz(path), path, options, kLoadNpz);
  if (options.keep_optimizer_options()) {
    // The optimizer's own options replace whatever the file holds (Chainer saves none).
    const std::string groups = state_layout::key(state_layout::kParamGroups, "");
    std::vector<std::string> from_file;
    for (const auto& entry : selected) {
      if (entry.first.compare(0, groups.size(), groups) == 0) from_file.push_back(entry.first);
    }
    for (const std::string& key : from_file) selected.erase(key);
    for (const auto& [key, value] : optimizer_state_dict(optimizer)) {
      if (key.compare(0, groups.size(), groups) == 0) selected.set(key, value);
    }
  }
  return load_part(*optimizer_part(optimizer), std::move(selected), options.strict(), kLoadNpz,
                   path);
}

}  // namespace tth
