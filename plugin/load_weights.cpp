#include "tth/load_weights.h"

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>

#include "load_weights_impl.h"
#include "module_state.h"
#include "torch_archive.h"
#include "training_state.h"
#include "tth/error.h"
#include "tth/key_maps.h"
#include "tth/weights_file.h"

namespace tth {

namespace {

constexpr const char* kLoadWeights = "load_weights";

// Whether `from` converts to `to` without losing values.
bool lossless(at::ScalarType from, at::ScalarType to) {
  if (from == to || from == at::kBool) return true;
  if (to == at::kBool) return false;
  const bool from_float = at::isFloatingType(from), to_float = at::isFloatingType(to);
  const bool to_complex = at::isComplexType(to);
  const auto size = [](at::ScalarType t) { return c10::elementSize(t); };
  if (at::isComplexType(from)) return to_complex && size(to) > size(from);
  if (from_float) {
    if (to_complex)
      return lossless(from, c10::toRealValueType(to));  // bfloat16 into ComplexHalf: no
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

// Whether every key carries what Python's wrappers add (pytorch_names removes it).
bool wrapper_names(const StateDict& state) {
  return !state.empty() && std::all_of(state.begin(), state.end(), [](const auto& entry) {
    return pytorch_names(entry.first) != entry.first;
  });
}

}  // namespace

StateDict select_weights(const StateDict& file, const std::string& path,
                         const LoadWeightsOptions& options, const char* who) {
  StateDict selected;
  const std::string& prefix = options.prefix();
  const auto& ignore = options.ignore();
  bool any = false;
  for (const auto& [key, value] : file) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    any = true;
    const std::string name = key.substr(prefix.size());
    if (std::find(ignore.begin(), ignore.end(), name) != ignore.end()) continue;
    const std::string target = options.key_map() ? options.key_map()(name) : name;
    if (target.empty()) continue;
    if (selected.contains(target)) {
      throw StateError(
          who, key, fmt::format("maps to '{}', which another key of the file maps to too", target),
          path);
    }
    const auto* tensor = std::get_if<at::Tensor>(&value);
    if (options.value_map() && tensor != nullptr) {
      selected.set(target, options.value_map()(target, *tensor));
    } else {
      selected.set(target, value);
    }
  }
  if (!any && options.strict() && !prefix.empty()) {
    throw StateError(who, prefix, "no key of the file starts with this prefix", path);
  }
  return selected;
}

IncompatibleKeys load_module_weights(const StateDict& file, const std::string& path,
                                     torch::nn::Module& module, const LoadWeightsOptions& options,
                                     const char* who) {
  StateDict selected = select_weights(file, path, options, who);
  // Lossless dtype conversions first (a float16 file into float32 weights); everything else
  // is checked, then loaded, as any state is.
  const StateDict expected = module_state_dict(module);
  for (const auto& [key, value] : expected) {
    if (!selected.contains(key)) continue;
    const auto* tensor = std::get_if<at::Tensor>(&selected.at(key));
    const at::Tensor& expected_tensor = std::get<at::Tensor>(value);
    const auto target = expected_tensor.scalar_type();
    // Another shape is reported below with the file's dtype, and converting it could allocate
    // what a hostile view (a tiny storage expanded) describes.
    if (tensor == nullptr || tensor->scalar_type() == target ||
        tensor->sizes() != expected_tensor.sizes()) {
      continue;
    }
    if (!lossless(tensor->scalar_type(), target)) {
      throw StateError(who, key,
                       fmt::format("the file holds {} values, which do not convert to {} "
                                   "without loss",
                                   c10::toString(tensor->scalar_type()), c10::toString(target)),
                       path);
    }
    selected.set(key, tensor->to(target));
  }
  const bool wrapped = wrapper_names(selected) && !wrapper_names(expected);
  try {
    return load_part(*module_part(module), std::move(selected), options.strict(), who, path);
  } catch (const StateError& error) {
    if (!wrapped) throw;
    throw StateError(error.operation(), error.key(),
                     error.problem() +
                         " (the file's keys carry the 'module.' or '_orig_mod.' of Python's "
                         "DataParallel or torch.compile: load with key_map(tth::pytorch_names))",
                     error.file());
  }
}

IncompatibleKeys load_weights(const std::string& path, torch::nn::Module& module,
                              const LoadWeightsOptions& options) {
  // A TorchScript module's weights are its modules' tensor attributes; its other attributes
  // (`training`, lists, scalars) are not weights.
  StateDict file;
  try {
    const bool torchscript = detect_weights_format(path) == WeightsFormat::kTorchScript;
    file = torchscript ? read_module_weights(path) : read_weights(path);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    // LibTorch refusing what a well-formed but hostile file describes (a huge view, say).
    throw FormatError(
        fmt::format("{}: '{}' cannot be loaded: {}", kLoadWeights, path, error.what()));
  }
  return load_module_weights(file, path, module, options, kLoadWeights);
}

}  // namespace tth
