// Weights files from anywhere: what a file is, what it holds, whether it is intact, and its
// values as a StateDict. This is `tth inspect`, `tth verify` and `tth convert`, and the reading
// half of load_weights.h.
//
// Formats, detected from the content (never from the file name):
//   kSnapshotArchive  our snapshot as a LibTorch archive (holds tth/format_version)
//   kSnapshotNpz      our snapshot as an npz (holds tth/format_version)
//   kNpz              any other npz: numpy.savez, numpy.savez_compressed, Chainer's save_npz
//   kTorchScript      a zip whose data.pkl holds a module object: Python's torch.jit.save,
//                     LibTorch's torch::save and OutputArchive (our torch_savefun outside
//                     snapshots)
//   kTorchSave        a zip whose data.pkl holds a dict (or list): Python's torch.save (the
//                     zip format, PyTorch >= 1.6), such as a state dict or a checkpoint dict
// Python's legacy torch.save format (before 1.6, not a zip) is refused with a message that
// says how to re-save it. Every archive is read by the restricted pickle reader (nothing in a
// file is ever compiled, imported or called) and every tensor checked against its storage.
//
// Keys (the StateDict layout, tth/state_dict.h): the nesting of dicts, lists and tuples is
// joined with '/', list items by their index (`opt/param_groups/0/lr`); the attributes of a
// TorchScript module's submodules with '.', as Python's state_dict() names them (`0.weight`).
// Ints, floats and bools become 0-d Long, Double and Bool tensors, strings texts; None values
// are listed by inspect_weights but have no StateDict value. Tensors come back on the CPU.
//
// Thread safety: the functions are reentrant.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tth/state_dict.h"

namespace tth {

/// What a weights file is (see above).
enum class WeightsFormat { kSnapshotArchive, kSnapshotNpz, kNpz, kTorchScript, kTorchSave };
/// "TorchTrainerHook snapshot (LibTorch archive)", "TorchTrainerHook snapshot (npz)", "npz",
/// "TorchScript archive", "PyTorch torch.save file".
const char* to_string(WeightsFormat format);

/// The format of `path`, from its zip index and (for archives) its data.pkl; nothing else is
/// read. Throws tth::FormatError naming the file when it is none of them.
WeightsFormat detect_weights_format(const std::string& path);

/// One entry as inspect_weights lists it.
struct WeightsEntry {
  std::string key;
  /// "Float", "Half", "Long", ... (LibTorch's names), "text", or "None".
  std::string dtype;
  std::vector<int64_t> shape;  ///< Empty for 0-d, texts and None.
  uint64_t bytes = 0;          ///< Elements times element size; a text's length; 0 for None.
};

/// What inspect_weights found.
struct WeightsInfo {
  WeightsFormat format = WeightsFormat::kNpz;
  std::optional<int64_t> format_version;  ///< Snapshots only.
  std::optional<int64_t> iteration;       ///< Snapshots that hold tth/iteration.
  std::vector<WeightsEntry> entries;      ///< Every entry, metadata included, in file order.
};

/// Lists `path`'s entries. A LibTorch or TorchScript archive or torch.save file is listed from
/// its data.pkl with its structure checked (no tensor is read); an npz file is read. A
/// snapshot's metadata is checked as read_snapshot checks it. Throws tth::FormatError naming
/// the file (and the member or key).
WeightsInfo inspect_weights(const std::string& path);

/// Verifies `path`: the container and every member's CRC-32 (streamed in bounded memory), an
/// archive's structure, and a snapshot's metadata (verify_snapshot). Returns its format.
/// Throws tth::FormatError naming the file (and the member or key).
WeightsFormat verify_weights(const std::string& path);

/// Every value of `path`, keyed as described above (metadata kept). Verified first, as
/// read_snapshot does. Throws tth::FormatError naming the file, tth::IOError if unreadable.
StateDict read_weights(const std::string& path);

}  // namespace tth
