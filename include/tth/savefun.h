// Savefuns: how a StateDict becomes a file, and back.
//
// A savefun writes a StateDict to a path; the snapshot machinery hands it a fresh temp file
// inside the atomic commit (atomic_file.h), so a savefun never needs to care about crashes.
// A loadfun reads such a file back into a StateDict. Pass your own pair through
// SnapshotOptions to use another format.
//
// The LibTorch archive format (the default) writes each tensor as a parameter and each text
// as a string attribute of a TorchScript archive (LibTorch's `OutputArchive`). LibTorch copies
// attribute names unescaped into the archive's TorchScript source, so the names are the keys
// percent-encoded: every byte outside [A-Za-z0-9_./:-] (and '%') becomes %XX, as does the first
// byte of a key that is a Python keyword or `__parameters__`, `__buffers__`,
// `__annotations__`. Typical keys (`models/main/0.weight`) are unchanged. Python reads a file
// with `m = torch.jit.load(path)`: `dict(m.named_parameters())` lists every tensor under its
// encoded name, `getattr(m, name)` reads any entry, and `urllib.parse.unquote(name)` gives the
// key back. A state whose tth/format_version is 1 (snapshot_file.h) is written with its keys
// as they are, as that version did, and is refused if one holds '"', '\' or a control byte, or
// is a name TorchScript cannot take bare (that version could not store those).
//
// Reading never goes through LibTorch's reader (which compiles the archive's TorchScript code
// and runs a general unpickler): `torch_loadfun` interprets data.pkl with a restricted reader
// that accepts only what LibTorch's and PyTorch's tensor archives hold (a module object or a
// dict of tensors, ints, floats, bools and strings; None attributes are skipped), checks every
// tensor's storage, offset, sizes and strides against the members present before allocating,
// and refuses anything else with tth::FormatError. It also reads Python's `torch.jit.save` of
// a module without submodules and `torch.save` of a flat state dict.
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
/// Reads a LibTorch archive written by torch_savefun (or a tensor archive as above), keys
/// decoded unless its tth/format_version is 1. Tensors come back on the CPU, views of one
/// buffer per storage; ints, floats and bools as 0-d kLong, kDouble and kBool tensors. Throws
/// tth::FormatError naming the file when it cannot be read.
LoadFunction torch_loadfun();

}  // namespace tth
