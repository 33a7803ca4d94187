// Loading a weights file into a module: one function for every format a LibTorch user has.
//
// `load_weights(path, module, options)` detects the format from the file's content
// (weights_file.h): our snapshots (both formats), any npz (numpy, Chainer), TorchScript
// archives (Python's torch.jit.save, LibTorch's torch::save) and Python's torch.save files
// (a state dict, or a dict holding one). What it takes from each:
//   - npz files, snapshots and torch.save files: every entry (the nesting of dicts is joined
//     with '/': `torch.save({"model": m.state_dict()})` holds `model/fc.weight`);
//   - TorchScript archives: the tensors that are attributes of modules (parameters, buffers),
//     named as the module's state_dict() names them (`0.weight`); other attributes (`training`,
//     lists, scalars) are not weights and are left out.
// Then, as load_npz always did: `prefix` selects a subtree and is removed, `ignore` drops keys,
// `key_map` renames (or drops, returning ""), `value_map` converts, and the result must match
// the module's
// parameters and buffers: same shapes, dtypes equal or converted without loss (float16 into
// float32, say), and with `strict` the same keys. Everything is checked before anything
// changes; a problem is a tth::StateError "load_weights: <file>: key '<key>': <problem>", a
// damaged or hostile file a tth::FormatError naming the file (nothing was changed then either).
//
// Thread safety: reentrant; the module must not be used by another thread meanwhile.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <functional>
#include <string>
#include <vector>

#include "tth/state_dict.h"
#include "tth/torch_fwd.h"

namespace tth {

/// A key map: file key -> target key ("" skips the key). key_maps.h has the common ones.
using KeyMap = std::function<std::string(const std::string&)>;
/// A value map: (target key, file value) -> the value to load.
using ValueMap = std::function<at::Tensor(const std::string&, const at::Tensor&)>;

/// Options of load_weights and load_npz.
struct LoadWeightsOptions {
  using KeyMap = tth::KeyMap;
  using ValueMap = tth::ValueMap;
  /// Only keys starting with this are loaded, with it removed (Chainer's `path`; "model/" for
  /// a torch.save checkpoint dict; "models/main/" for our snapshots). Default "".
  TORCH_ARG(std::string, prefix);
  /// Renames a file key (after the prefix) to the target's key; "" skips it. Default: identity.
  TORCH_ARG(KeyMap, key_map);
  /// Converts a tensor after renaming, before any check (Chainer's velocity into LibTorch's
  /// momentum buffer, a transposed layout). Default: none.
  TORCH_ARG(ValueMap, value_map);
  /// File keys (after the prefix, before the map) to skip. Default none.
  TORCH_ARG(std::vector<std::string>, ignore);
  /// Every target key must be in the file and every file key in the target. With false, the
  /// target keeps its current values where the file has no key, and the load returns the keys
  /// it left out (and warns through tth::warn). Default true.
  TORCH_ARG(bool, strict) = true;
  /// Loading into an optimizer (load_npz): keep its param-group options (lr, betas, ...) as
  /// constructed and load only the per-parameter state, ignoring any options the file holds;
  /// for files that save none (Chainer's: chainer_optimizer_state sets it). Default false.
  TORCH_ARG(bool, keep_optimizer_options) = false;
};

/// Loads the weights file at `path` (any format above) into `module`'s parameters and
/// buffers. A strict load whose prefix selects no key of the file is a tth::StateError naming
/// the prefix (a mistyped prefix). Returns the keys a non-strict load left out (empty when strict).
IncompatibleKeys load_weights(const std::string& path, torch::nn::Module& module,
                              const LoadWeightsOptions& options = {});

}  // namespace tth
