#include "module_state.h"

#include <torch/nn/module.h>

namespace tth {

StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict state;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    state.set(item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    state.set(item.key(), item.value().detach());
  }
  return state;
}

void load_module_state(torch::nn::Module& module, StateDict& state) {
  torch::NoGradGuard no_grad;
  auto load = [&](const auto& named) {
    for (const auto& item : named) {
      if (!state.contains(item.key())) continue;
      item.value().copy_(std::get<at::Tensor>(state.take(item.key())));
    }
  };
  load(module.named_parameters(/*recurse=*/true));
  load(module.named_buffers(/*recurse=*/true));
}

}  // namespace tth
