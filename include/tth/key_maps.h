// Key maps: functions that rename the keys of a weights file to the names of a LibTorch
// module or optimizer, for LoadWeightsOptions::key_map (load_weights.h), and the options that
// continue a Chainer training.
//
// A key map receives each file key after the prefix was removed and returns the target's key,
// or an empty string to skip the key (as `ignore` does). Maps compose as functions do:
// `[](auto& k) { return chainer_names(strip(k)); }`.
//
// - chainer_names: Chainer's link paths (`l1/W`) to LibTorch's parameter names (`l1.weight`).
// - pytorch_names: Python's state-dict keys to LibTorch's. The module classes of LibTorch
//   register their parameters and buffers under Python's names, so this only removes what
//   Python's wrappers add: `module.` (DataParallel, DistributedDataParallel) and `_orig_mod.`
//   (torch.compile).
// - chainer_optimizer_state: the options (a key map and a value map) that load a Chainer trainer
//   snapshot's per-parameter optimizer state (`<link path>/<W|b>/{m,v,t}`) into the optimizer
//   layout of tth/state_layout.h, so that load_npz(snapshot, optimizer, ...) continues a
//   Chainer training.
//
// Thread safety: the maps are pure functions; the maps of chainer_optimizer_state hold copies
// of the names and learning rates they need, and no reference to the module or the optimizer.
#pragma once

#include <string>

#include "tth/load_weights.h"
#include "tth/torch_fwd.h"

namespace tth {

/// Chainer's link names to LibTorch's: '/' becomes '.', and the last component W -> weight,
/// b -> bias, gamma -> weight, beta -> bias, avg_mean -> running_mean, avg_var -> running_var.
std::string chainer_names(const std::string& key);

/// Python's state-dict keys to LibTorch's: removes a leading `module.` (the prefix of
/// torch.nn.DataParallel and DistributedDataParallel, repeated when they were nested) and
/// every `_orig_mod.` component (torch.compile). Every other key is returned unchanged: the
/// parameters and buffers of LibTorch's module classes have Python's names.
std::string pytorch_names(const std::string& key);

/// The options that load the per-parameter optimizer state of a Chainer snapshot into
/// `optimizer`, built over `module`'s parameters; add the prefix that selects the optimizer
/// and the link: `load_npz(snapshot, optimizer, chainer_optimizer_state(net, optimizer)
/// .prefix("updater/optimizer:main/predictor/"))`. The key map places a file key
/// `<link path>/<W|b|gamma|...>/<field>` whose link path names a parameter of `module` (after
/// chainer_names) at `state/<g>/<i>/<LibTorch field>`, where (g, i) is that parameter's place
/// in `optimizer`; other keys are returned unchanged, so a strict load names them.
///   Adam, AdamW   m -> exp_avg, v -> exp_avg_sq, vhat -> max_exp_avg_sq, t -> step
///   SGD           v -> momentum_buffer, converted: Chainer's MomentumSGD keeps the velocity
///                 v = momentum * v - lr * grad (W += v), LibTorch the buffer
///                 buf = momentum * buf + grad (W -= lr * buf), so buf = -v / lr, with each
///                 group's lr as `optimizer` holds it now (the next step's); t (Chainer counts
///                 every rule's steps, SGD keeps no count) is skipped
/// The hyper-parameters, which Chainer does not save, stay those of `optimizer` as constructed
/// (keep_optimizer_options is set). Throws tth::Error naming the
/// argument if the optimizer is neither SGD, Adam nor AdamW, holds a parameter twice, or is an
/// SGD with a group whose lr is 0.
LoadWeightsOptions chainer_optimizer_state(const torch::nn::Module& module,
                                           const torch::optim::Optimizer& optimizer);

}  // namespace tth
