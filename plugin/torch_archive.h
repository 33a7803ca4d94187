// Reading LibTorch and PyTorch tensor archives into a StateDict without LibTorch's reader.
// Private.
//
// LibTorch's InputArchive compiles the archive's TorchScript code and runs its general
// unpickler on data.pkl: file content would reach an interpreter. Here the container's
// restricted reader (container/pickle.h) interprets data.pkl and checks every storage, offset,
// size and stride against the members present; only then is memory allocated, one buffer per
// storage member, filled straight from the zip, and each tensor made a view of its storage (as
// LibTorch does: tensors that shared a storage when saved share it again). The archive's code
// is never read. Tensors come back on the CPU, without requires_grad.
//
// Thread safety: the functions are reentrant.
#pragma once

#include <functional>
#include <string>

#include "tth/state_dict.h"

namespace tth {

namespace container {
class ZipReader;
enum class StorageType;
}  // namespace container

/// The dtype of a storage type.
at::ScalarType scalar_type(container::StorageType type);

/// Checks the structure of the tensor archive `reader` holds without reading its tensors, as
/// read_torch_archive does before it allocates: throws tth::FormatError naming the file when
/// read_torch_archive would fail for a reason other than memory or I/O.
void check_torch_archive(const container::ZipReader& reader);

/// Every entry of the tensor archive at `path`: tensors; ints, floats and bools as 0-d kLong,
/// kDouble and kBool tensors; strings as texts. Keys are decoded unless the archive's
/// tth/format_version is 1 (see container::encode_archive_key). Throws tth::FormatError naming
/// the file, tth::IOError if it cannot be read.
StateDict read_torch_archive(const std::string& path);
/// Only the entries whose keys `wanted` accepts; the storages of the others are never read.
StateDict read_torch_archive(const std::string& path,
                             const std::function<bool(const std::string&)>& wanted);

/// The weights of a TorchScript archive: its tensors that are attributes of its module
/// objects (parameters and buffers; not list items or the like), keyed as Python's
/// state_dict() keys them. Throws as read_torch_archive.
StateDict read_module_weights(const std::string& path);

/// Whether torch_savefun stores the keys of `state` percent-encoded (container/pickle.h): yes
/// unless its tth/format_version is a 0-d integer tensor <= kLastUnencodedKeysVersion, the same
/// test the reader applies to the file.
bool archive_keys_encoded(const StateDict& state);

}  // namespace tth
