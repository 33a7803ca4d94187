// The part of loading weights that every format shares (load_weights, load_npz). Private.
#pragma once

#include <string>

#include "tth/load_weights.h"
#include "tth/state_dict.h"

namespace tth {

/// The entries of `file` (read from `path`) under the options' prefix, with it removed,
/// without ignored keys, renamed by the key map (dropped where it returns ""), tensors
/// converted by the value map. Throws tth::StateError naming the prefix when a strict load's
/// prefix selects nothing. Throws
/// tth::StateError "<who>: <path>: key '<key>': ..." when two keys map to one.
StateDict select_weights(const StateDict& file, const std::string& path,
                         const LoadWeightsOptions& options, const char* who);

/// Selects from `file` as above, converts dtypes where lossless, checks everything against
/// `module`'s parameters and buffers, then loads (load_weights.h).
IncompatibleKeys load_module_weights(const StateDict& file, const std::string& path,
                                     torch::nn::Module& module, const LoadWeightsOptions& options,
                                     const char* who);

}  // namespace tth
