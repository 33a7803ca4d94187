// The state of a torch::nn::Module as a StateDict: parameters then buffers, under their
// LibTorch names ("fc1.weight"). Private to the library.
#pragma once

#include "tth/state_dict.h"

namespace torch::nn {
class Module;
}

namespace tth {

/// Parameters and buffers of `module` (detached views, no copy).
StateDict module_state_dict(const torch::nn::Module& module);

/// Copies the values of `state` into `module`'s parameters and buffers, releasing each value
/// of `state` once copied (so a loader holds at most one extra tensor beyond the state).
/// REQUIRES: `state` was checked against module_state_dict(module) (check_compatible);
/// absent keys are kept.
void load_module_state(torch::nn::Module& module, StateDict& state);

}  // namespace tth
