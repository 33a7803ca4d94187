#include "rng_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <mutex>
#include <string>

#include "tth/state_layout.h"

namespace tth {

namespace {

template <typename Fn>
void for_each_generator(Fn&& fn) {
  fn(std::string(state_layout::kCpu), at::detail::getDefaultCPUGenerator());
  const auto& cuda = at::detail::getCUDAHooks();
  if (!cuda.hasCUDA()) return;
  // Through the Context, whose name for it is the same in LibTorch 1.13 and 2.x (the hooks'
  // getDefaultCUDAGenerator became getDefaultGenerator).
  for (int device = 0; device < cuda.getNumGPUs(); ++device) {
    fn(state_layout::key(state_layout::kCuda, std::to_string(device)),
       at::globalContext().defaultGenerator(
           c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device))));
  }
}

}  // namespace

StateDict rng_state_dict() {
  StateDict state;
  for_each_generator([&](const std::string& name, const at::Generator& generator) {
    at::Generator handle = generator;
    std::lock_guard<std::mutex> lock(handle.mutex());
    state.set(name, handle.get_state());
  });
  return state;
}

void load_rng_state(const StateDict& state) {
  for_each_generator([&](const std::string& name, const at::Generator& generator) {
    if (!state.contains(name)) return;
    at::Generator handle = generator;
    std::lock_guard<std::mutex> lock(handle.mutex());
    handle.set_state(state.tensor(name));
  });
}

}  // namespace tth
