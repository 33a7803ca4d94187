// Savefuns: how a StateDict becomes a file, and back.
//
// A savefun writes a StateDict to a path; the snapshot machinery hands it a fresh temp file
// inside the atomic commit (atomic_file.h), so a savefun never needs to care about crashes.
// A loadfun reads such a file back into a StateDict. Pass your own pair through
// SnapshotOptions to use another format.
//
// The LibTorch archive format (the default) writes each tensor as a parameter and each text
// as a string attribute of a TorchScript archive, under the StateDict's keys: C++ reads it
// with `torch::serialize::InputArchive` (or `torch_loadfun`), Python with
// `torch.jit.load(path)` (`dict(m.named_parameters())`, `getattr(m, key)`).
//
// Thread safety: the functions returned here are stateless and may run on any thread.
#pragma once

#include <functional>
#include <string>

#include "tth/state_dict.h"

namespace tth {

/// Writes `state` to `path` (an existing empty file that the function may truncate).
using SaveFunction = std::function<void(const std::string& path, const StateDict& state)>;
/// Reads a file written by the matching SaveFunction.
using LoadFunction = std::function<StateDict(const std::string& path)>;

/// The LibTorch archive savefun (the default).
SaveFunction torch_savefun();
/// Reads a LibTorch archive written by torch_savefun. Throws tth::FormatError naming the file
/// when it cannot be read.
LoadFunction torch_loadfun();

}  // namespace tth
