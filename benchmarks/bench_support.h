// What several benchmark programs share: the model-like state they write, and the process's
// resident memory (for the memory tables).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>

#include "tth/state_dict.h"

namespace bench {

inline constexpr int64_t kMiB = int64_t{1} << 20;
inline constexpr int64_t kTensorBytes = 4 * kMiB;

// `mib` MiB of float32 as 4 MiB tensors with model-like keys; random values, so that deflate
// sees what real weights give it.
inline tth::StateDict make_state(int64_t mib) {
  torch::manual_seed(0);
  tth::StateDict state;
  constexpr int64_t kElements = kTensorBytes / static_cast<int64_t>(sizeof(float));
  for (int64_t i = 0; i < mib * kMiB / kTensorBytes; ++i) {
    state.set("models/main/layers/" + std::to_string(i) + "/weight",
              torch::randn({kElements / 1024, 1024}, torch::kFloat32));
  }
  return state;
}

// Resident (VmRSS) or peak resident (VmHWM) memory in MiB, from /proc/self/status.
inline double status_mib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024;
  }
  throw std::runtime_error("no " + field + " in /proc/self/status");
}

// Resets VmHWM to the current VmRSS (Linux >= 4.0).
inline void reset_peak() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

}  // namespace bench
