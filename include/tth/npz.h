// The npz savefun: snapshots that numpy and Chainer read, and .npz files loaded into LibTorch.
//
// Writing (`npz_savefun`): one `<key>.npy` member per StateDict entry, in order, with the
// StateDict's '/'-joined keys (Chainer's DictionarySerializer layout). Members are .npy v1.0
// with headers padded as numpy pads them; tensors are streamed from their memory into the
// file (non-contiguous, non-CPU and bfloat16 tensors in bounded chunks), so no second copy of
// the state is made; the CRC-32 is computed while writing. Stored by default: deflate saves
// about 7% on float weights. Deflate members are compressed with libdeflate, several members at
// once on `threads` worker threads (all cores by default; over 4 times numpy.savez_compressed's
// speed on 2 cores), and written strictly in order, so the file's bytes do not depend on the
// thread count. Each member's compressed bytes are held in memory until written: at most
// threads + 1 members at a time, and beyond one only while their data sum to at most 1 GiB; a
// tensor that is not contiguous in CPU memory, or is bfloat16, is converted whole first. ZIP64
// wherever a size, an offset or the member count needs it. Texts become 0-d numpy unicode arrays.
// numpy has no bfloat16, so a bfloat16 tensor is written as float32 (lossless) and its key is
// listed in the text member `tth/npz_dtypes` (JSON), which npz_loadfun uses to convert it back.
//
// Reading (`read_npz`, `npz_loadfun`): files written by us, `numpy.savez`,
// `numpy.savez_compressed` (any Python zip writer, data descriptors and ZIP64 included), and
// Chainer's `save_npz`. Every member's CRC-32 is verified; .npy v1/v2/v3 headers, both byte
// orders and Fortran order are accepted; a 0-d object array (Chainer's None) is skipped. A
// corrupt file is a tth::FormatError naming the file and member, never a crash: sizes in the
// file are checked against each other before anything is allocated.
//
// Loading into a module (`load_npz`): a key prefix selects a subtree (Chainer trainer
// snapshots keep the model under `updater/model:main/`), a key map renames (`chainer_names`
// turns `l1/W` into `l1.weight`), `ignore` skips names, `strict` requires an exact match.
// Shapes must match; dtypes must match or convert without loss (float16 into float32, say).
//
// Thread safety: the functions are reentrant.
#pragma once

#include <torch/arg.h>

#include <functional>
#include <string>
#include <vector>

#include "tth/savefun.h"
#include "tth/state_dict.h"
#include "tth/torch_fwd.h"

namespace tth {

/// How npz members are stored.
enum class NpzCompression { kStored, kDeflate };

/// Options of npz_savefun.
struct NpzOptions {
  /// kStored (numpy.savez) or kDeflate (numpy.savez_compressed, Chainer's default). Default
  /// kStored.
  TORCH_ARG(NpzCompression, compression) = NpzCompression::kStored;
  /// Deflate level 0..9 for kDeflate, or -1 for the default (6); libdeflate's level of the same
  /// number (0: stored blocks; 1 to 9 about zlib's ratios, 1 the fastest). Default -1.
  TORCH_ARG(int, level) = -1;
  /// Worker threads compressing kDeflate members; 0 for std::thread::hardware_concurrency().
  /// The output is the same for any count. Default 0.
  TORCH_ARG(int, threads) = 0;
};

/// The npz savefun. Throws tth::Error naming the key for a dtype numpy cannot hold, and when
/// made with a level outside -1..9 or a negative thread count.
SaveFunction npz_savefun(NpzOptions options = {});
/// Reads an npz file into a StateDict (bfloat16 restored from tth/npz_dtypes, which is then
/// dropped).
LoadFunction npz_loadfun();
/// Same as npz_loadfun()(path).
StateDict read_npz(const std::string& path);
/// Only the arrays whose keys `wanted` accepts; the other members are never read.
StateDict read_npz(const std::string& path, const std::function<bool(const std::string&)>& wanted);

/// Options of load_npz.
struct NpzLoadOptions {
  using KeyMap = std::function<std::string(const std::string&)>;
  /// Only keys starting with this are loaded, with it removed (Chainer's `path`). Default "".
  TORCH_ARG(std::string, prefix);
  /// Renames a file key (after the prefix) to the target's key. Default: identity.
  TORCH_ARG(KeyMap, key_map);
  /// File keys (after the prefix, before the map) to skip. Default none.
  TORCH_ARG(std::vector<std::string>, ignore);
  /// Every target key must be in the file and every file key in the target. With false, the
  /// target keeps its current values where the file has no key, and load_npz returns the keys
  /// it left out (and warns through tth::warn). Default true.
  TORCH_ARG(bool, strict) = true;
};

/// Chainer's link names to LibTorch's: '/' becomes '.', and the last component W -> weight,
/// b -> bias, gamma -> weight, beta -> bias, avg_mean -> running_mean, avg_var -> running_var.
std::string chainer_names(const std::string& key);

/// Loads the npz file at `path` into `module`'s parameters and buffers. Everything is checked
/// before anything changes; a problem is a tth::StateError "load_npz: <file>: key '<key>':
/// <problem>". Returns the keys a non-strict load left out (empty when strict).
IncompatibleKeys load_npz(const std::string& path, torch::nn::Module& module,
                          const NpzLoadOptions& options = {});
/// Loads an optimizer's state (the layout of tth/state_layout.h under `optimizers/<name>/`,
/// selected with the prefix) into `optimizer`. Non-strict: a parameter whose state the file
/// lacks keeps its current state.
IncompatibleKeys load_npz(const std::string& path, torch::optim::Optimizer& optimizer,
                          const NpzLoadOptions& options = {});

}  // namespace tth
