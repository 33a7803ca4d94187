// CRC-32 as zip and numpy use it (polynomial 0xEDB88320, reflected, initial and final XOR
// 0xFFFFFFFF), computed incrementally so a member's checksum is accumulated while it streams.
//
// Uses libdeflate when built with TTH_HAVE_LIBDEFLATE (13-14 GB/s against zlib's 6 GB/s on 64
// MiB here, so checksumming stays far below disk time), else zlib's `crc32_z`, whose length is a
// size_t (zlib's plain `crc32` takes a 32-bit length).
// Pure function: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tth::container {

/// The CRC-32 of an empty input; the starting value of a chain.
constexpr uint32_t kCrc32Initial = 0;

/// Returns the CRC-32 of the bytes seen so far followed by `data[0, size)`, where `crc` is the
/// CRC-32 of the bytes seen so far (kCrc32Initial for none), like zlib's `crc32(crc, data, size)`.
uint32_t crc32_update(uint32_t crc, const void* data, std::size_t size);

}  // namespace tth::container
