// The state of a torch::optim::Optimizer as a StateDict, complete where LibTorch's own
// serialization is not: param-group options (lr, betas, ...) are saved and restored
// (pytorch#125215), and per-parameter state is keyed by group and position. Private.
//
// Layout under the optimizer's prefix:
//   param_groups/<g>/<option>     doubles and flags (betas as betas/0, betas/1)
//   state/<g>/<i>/<field>         per-parameter state; absent until the parameter's first step
// Supported: SGD, Adam, AdamW, Adagrad, RMSprop. Another optimizer type is a tth::Error that
// names it.
#pragma once

#include <string>

#include "tth/state_dict.h"

namespace torch::optim {
class Optimizer;
}

namespace tth {

StateDict optimizer_state_dict(const torch::optim::Optimizer& optimizer);

/// Checks `state` against `optimizer` (group and parameter counts, option keys and types,
/// per-parameter tensors of the parameter's shape and dtype). Throws StateError naming
/// `prefix` + key. Per-parameter state may be absent (never stepped); with `strict`, keys the
/// optimizer does not know are errors.
void check_optimizer_state(const torch::optim::Optimizer& optimizer, const StateDict& state,
                           bool strict, const std::string& prefix);

/// Loads a checked state: options, and per-parameter state (replacing what is there).
void load_optimizer_state(torch::optim::Optimizer& optimizer, const StateDict& state);

}  // namespace tth
