// Snapshot files: detecting the format, verifying the container, reading with a version
// check. Shared by autoload, snapshot loading and the `tth` command-line tool.
//
// Both built-in formats are zip containers (a LibTorch archive is a zip of pickles and tensor
// records, an npz a zip of .npy members), so one verifier serves both: it walks the central
// directory, checks every member's bounds and reads every member to check its CRC-32. A torn
// write (a truncated file) or a flipped byte fails verification.
//
// Every snapshot holds two metadata entries beside the state:
//   tth/format_version   kSnapshotFormatVersion when written; a newer version is refused
//   tth/iteration        the training iteration (0 for an object saved outside training)
//
// Thread safety: the functions are reentrant.
#pragma once

#include <cstdint>
#include <string>

#include "tth/savefun.h"
#include "tth/state_dict.h"

namespace tth {

/// Version of the key layout written by this build.
inline constexpr int64_t kSnapshotFormatVersion = 1;
/// Metadata keys written into every snapshot.
inline constexpr const char* kFormatVersionKey = "tth/format_version";
inline constexpr const char* kIterationKey = "tth/iteration";

/// What a file is.
enum class FileFormat { kTorchArchive, kNpz, kOther };
/// "LibTorch archive", "npz" or "other".
const char* to_string(FileFormat format);

/// Detects the format and, for zip containers, verifies the structure and every member's
/// CRC-32. Throws tth::FormatError naming the file (and member), tth::IOError if unreadable.
/// A file that is not a zip container is kOther (nothing to verify).
FileFormat verify_file(const std::string& path);

/// Verifies `path`, reads it (LibTorch archives and npz files by their format, other files
/// with `loadfun`, which is required then), and checks the format version. The result keeps
/// the metadata keys. Throws tth::FormatError naming the file.
StateDict read_snapshot(const std::string& path, const LoadFunction& loadfun = nullptr);

/// `state` without the metadata keys (those under "tth/").
StateDict without_metadata(const StateDict& state);

}  // namespace tth
