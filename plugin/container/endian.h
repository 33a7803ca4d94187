// Little-endian loads and stores for the zip and npy container code.
//
// Zip headers and npy length fields are little-endian byte layouts, not C structs: reading them
// through byte arithmetic keeps the code free of alignment and host-endianness assumptions (the
// compiler turns these into single moves on x86-64 and ARM64). The functions are pure and
// thread-safe. `LeAppender` builds a record by appending fields in the order the format lists
// them, so a writer reads like the specification; readers load fields at named offsets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tth::container {

/// Reads a 16-bit little-endian value from `p` (2 readable bytes required).
inline uint16_t load_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

/// Reads a 32-bit little-endian value from `p` (4 readable bytes required).
inline uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(load_le16(p)) | (static_cast<uint32_t>(load_le16(p + 2)) << 16);
}

/// Reads a 64-bit little-endian value from `p` (8 readable bytes required).
inline uint64_t load_le64(const uint8_t* p) {
  return static_cast<uint64_t>(load_le32(p)) | (static_cast<uint64_t>(load_le32(p + 4)) << 32);
}

/// Writes `value` little-endian to `p` (2 writable bytes required).
inline void store_le16(uint8_t* p, uint16_t value) {
  p[0] = static_cast<uint8_t>(value);
  p[1] = static_cast<uint8_t>(value >> 8);
}

/// Writes `value` little-endian to `p` (4 writable bytes required).
inline void store_le32(uint8_t* p, uint32_t value) {
  store_le16(p, static_cast<uint16_t>(value));
  store_le16(p + 2, static_cast<uint16_t>(value >> 16));
}

/// Writes `value` little-endian to `p` (8 writable bytes required).
inline void store_le64(uint8_t* p, uint64_t value) {
  store_le32(p, static_cast<uint32_t>(value));
  store_le32(p + 4, static_cast<uint32_t>(value >> 32));
}

/// Appends little-endian fields to a byte vector it does not own. Not thread-safe.
class LeAppender {
 public:
  /// Appends to `out`, which must outlive the appender.
  explicit LeAppender(std::vector<uint8_t>& out) : out_(out) {}

  /// Appends a 16-bit field.
  LeAppender& u16(uint16_t value) {
    store_le16(grow(sizeof(value)), value);
    return *this;
  }
  /// Appends a 32-bit field.
  LeAppender& u32(uint32_t value) {
    store_le32(grow(sizeof(value)), value);
    return *this;
  }
  /// Appends a 64-bit field.
  LeAppender& u64(uint64_t value) {
    store_le64(grow(sizeof(value)), value);
    return *this;
  }
  /// Appends `size` raw bytes.
  LeAppender& bytes(const void* data, std::size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    out_.insert(out_.end(), p, p + size);
    return *this;
  }

 private:
  uint8_t* grow(std::size_t size) {
    out_.resize(out_.size() + size);
    return out_.data() + out_.size() - size;
  }

  std::vector<uint8_t>& out_;
};

}  // namespace tth::container
