// What snapshot_file.cpp knows about containers, shared with weights_file.cpp. Private.
#pragma once

#include <string>

#include "tth/snapshot_file.h"

namespace tth {

namespace container {
class ZipReader;
}  // namespace container

/// Whether the file starts as a zip does (a local header, or the end record of an empty zip).
/// Refuses a directory or a FIFO (tth::FormatError) before reading: a FIFO would block.
bool starts_like_zip(const std::string& path);

/// What a zip container holds, judged by its member names alone: kTorchArchive with a
/// `<dir>/data.pkl`, kNpz when every member is a `.npy`, else kOther.
FileFormat zip_format(const container::ZipReader& reader);

}  // namespace tth
