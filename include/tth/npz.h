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

#include <functional>
#include <string>
#include <vector>

#include "tth/key_maps.h"  // chainer_names, declared here before
#include "tth/load_weights.h"
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

/// The options of load_npz are those of load_weights (load_weights.h).
using NpzLoadOptions = LoadWeightsOptions;

/// Loads the npz file at `path` into `module`'s parameters and buffers. Everything is checked
/// before anything changes; a problem is a tth::StateError "load_npz: <file>: key '<key>':
/// <problem>". Returns the keys a non-strict load left out (empty when strict).
IncompatibleKeys load_npz(const std::string& path, torch::nn::Module& module,
                          const NpzLoadOptions& options = {});
/// Loads an optimizer's state (the layout of tth/state_layout.h under `optimizers/<name>/`,
/// selected with the prefix) into `optimizer`. Strict (the default): every option must be in
/// the file, and a parameter without state in the file is left without state (it never
/// stepped). Non-strict: what the file lacks keeps its current value, per option and per
/// parameter. With keep_optimizer_options, the optimizer's options stay as constructed and
/// only per-parameter state is loaded (Chainer's snapshots: chainer_optimizer_state).
IncompatibleKeys load_npz(const std::string& path, torch::optim::Optimizer& optimizer,
                          const NpzLoadOptions& options = {});

}  // namespace tth
