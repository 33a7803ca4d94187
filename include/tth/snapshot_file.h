// Snapshot files: detecting the format, verifying the container, reading with a version
// check. Shared by autoload, snapshot loading and the `tth` command-line tool.
//
// Both built-in formats are zip containers (a LibTorch archive is a zip of pickles and tensor
// records, an npz a zip of .npy members), so one verifier serves both: it walks the central
// directory, checks every member's bounds and reads every member to check its CRC-32. A torn
// write (a truncated file) or a flipped byte fails verification. For a LibTorch archive it
// also interprets data.pkl with the restricted reader that loading uses and checks every
// tensor against its storage member (see savefun.h), so a file that verifies does not fail to
// load for a structural reason. No file content is ever compiled or unpickled by LibTorch.
//
// Every snapshot holds two metadata entries beside the state, each a 0-d integer tensor:
//   tth/format_version   kSnapshotFormatVersion when written; a newer version is refused
//   tth/iteration        the training iteration (0 for an object saved outside training)
// and, only when written with SnapshotOptions::keep_best and the key was reported as a finite
// number, a third, a 0-d double tensor:
//   tth/retention_metric the reported value retention ranks the file by (snapshot.h)
// Loading ignores it (without_metadata drops every "tth/" key); the checks below do not
// judge it (a malformed value only means "no value" to retention), and readers that predate
// it drop it as any "tth/" key, so it needs no new format version.
//
// Thread safety: the functions are reentrant.
#pragma once

#include <cstdint>
#include <string>

#include "tth/savefun.h"
#include "tth/state_dict.h"

namespace tth {

/// Version of the file layout written by this build. 2: keys in LibTorch archives are
/// percent-encoded (savefun.h); 1: they were stored as they are. Both are read.
inline constexpr int64_t kSnapshotFormatVersion = 2;
/// Metadata keys written into every snapshot.
inline constexpr const char* kFormatVersionKey = "tth/format_version";
inline constexpr const char* kIterationKey = "tth/iteration";
/// Metadata key of a keep_best snapshot's value, when it has one.
inline constexpr const char* kRetentionMetricKey = "tth/retention_metric";
/// Metadata of a snapshot taken in a data-parallel job (snapshot.h): the job's world size,
/// and in each part of a sharded snapshot, the rank that wrote it.
inline constexpr const char* kWorldSizeKey = "tth/world_size";
inline constexpr const char* kRankKey = "tth/rank";

/// What a file is.
enum class FileFormat { kTorchArchive, kNpz, kOther };
/// "LibTorch archive", "npz" or "other".
const char* to_string(FileFormat format);

/// Detects the format and, for zip containers, verifies the structure and every member's
/// CRC-32. Throws tth::FormatError naming the file (and member), tth::IOError if unreadable.
/// A file that is not a zip container is kOther (nothing to verify).
FileFormat verify_file(const std::string& path);

/// Verifies `path`, reads it (LibTorch archives and npz files by their format, other files
/// with `loadfun`, which is required then), and checks the metadata: tth/format_version (1 to
/// kSnapshotFormatVersion) and, when present, tth/iteration (>= 0) must be 0-d integer tensors;
/// anything else (a float such as 1e300 or NaN, a complex, a text, a 1-d tensor) is refused.
/// The result keeps the metadata keys. Throws tth::FormatError naming the file (and the key).
StateDict read_snapshot(const std::string& path, const LoadFunction& loadfun = nullptr);

/// Verifies `path` as read_snapshot does (container, every CRC-32 streamed in bounded memory,
/// a LibTorch archive's structure) and checks its metadata, but reads no other value: memory
/// stays bounded by the metadata, whatever sizes the file declares. Returns the metadata
/// entries. This is `tth verify`. Throws tth::FormatError naming the file.
StateDict verify_snapshot(const std::string& path);

/// Reads the metadata entries of a LibTorch archive or npz snapshot and checks them as
/// read_snapshot does, without verifying or reading anything else: the cost is the zip index,
/// a LibTorch archive's data.pkl and the metadata members, whatever the file's size, and
/// memory stays bounded as verify_snapshot's. So a torn file (no index) fails, but damage
/// inside another member goes unnoticed (verify_snapshot finds it). Retention reads the values
/// of older snapshots this way. Throws tth::FormatError naming the file (also for another
/// format), tth::IOError if it cannot be read.
StateDict read_snapshot_metadata(const std::string& path);

/// `state` without the metadata keys (those under "tth/").
StateDict without_metadata(const StateDict& state);

}  // namespace tth
