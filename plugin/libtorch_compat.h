// Where LibTorch 1.13 and 2.x differ for this library, each difference behind one name here,
// so that the rest of the sources read the same against both. Private.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace tth::compat {

// The key of a parameter's entry in Optimizer::state(): LibTorch 1.x keys it by the address of
// the parameter's TensorImpl written as text (c10::guts::to_string, gone in 2.x), 2.x by the
// address itself.
using OptimizerStateKey =
    std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

template <typename Key = OptimizerStateKey>
Key optimizer_state_key(const at::Tensor& parameter) {
  void* address = parameter.unsafeGetTensorImpl();
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;  // as c10::guts::to_string writes a pointer
    text << address;
    return text.str();
  } else {
    return address;
  }
}

}  // namespace tth::compat
