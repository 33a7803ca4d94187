// The state of a torch::optim::Optimizer as a StateDict, complete where LibTorch's own
// serialization is not: param-group options (lr, betas, ...) are saved and restored
// (pytorch#125215), and per-parameter state is keyed by group and position, under the
// optimizer's prefix as tth/state_layout.h lays it out (param_groups/<g>/<option>,
// state/<g>/<i>/<field>; doc/state_layout.md lists every optimizer's fields). Private.
//
// Supported: SGD, Adam, AdamW, Adagrad, RMSprop. Another optimizer type is a tth::Error that
// names it. StateErrors thrown here carry the key relative to the optimizer's prefix and no
// operation: the caller (training_state.h) names both.
#pragma once

#include <functional>

#include "tth/state_dict.h"

namespace torch::optim {
class Optimizer;
}

namespace tth {

/// Throws tth::Error "<who>: optimizer must be SGD, ..., got <type>" unless the optimizer is
/// a supported one.
void check_supported_optimizer(const torch::optim::Optimizer& optimizer, const char* who);

StateDict optimizer_state_dict(const torch::optim::Optimizer& optimizer);

/// Checks `state` against `optimizer` (option keys and types, per-parameter tensors of the
/// parameter's shape and dtype). A parameter's state is absent (no field of this optimizer
/// type) or complete (every field its step always creates). Strict: every
/// option present, nothing unknown. Non-strict: what is missing or unknown goes to `report`.
void check_optimizer_state(const torch::optim::Optimizer& optimizer, const StateDict& state,
                           bool strict, IncompatibleKeys& report);

/// Prepares loading a checked state and returns the action that applies it: the options
/// present, and the per-parameter state of each parameter the state has. A parameter without
/// state in `state` loses its state when `strict` (it never stepped) and keeps it otherwise
/// (it was left out). Preparing copies each tensor and releases it from `state` at once, and
/// may fail (memory) without changing the optimizer; applying only moves pointers.
std::function<void()> prepare_optimizer_state(torch::optim::Optimizer& optimizer, StateDict& state,
                                              bool strict);

}  // namespace tth
