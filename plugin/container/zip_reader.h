// ZipReader lists and reads the members of a zip archive (.npz, or a LibTorch/PyTorch archive)
// held in a file or in memory, and verifies their CRC-32s.
//
// Construction reads only the end records and the central directory, and validates them
// against the file before anything is allocated from them: every count, offset and size must
// lie inside the file, local headers must repeat the central names, members must not overlap,
// names must be unique. Sizes and CRCs come from the central directory alone (local headers may
// hold zeros when data descriptors are used, or 0xFFFFFFFF with ZIP64). Members are streamed in
// bounded chunks (stored, or raw deflate through zlib) and their CRC-32 and size are checked
// when the last byte has been delivered, so a corrupt member fails before read() returns.
// Every tth::FormatError names the file ("<memory>" for a span) and, where one is involved, the
// member. Supported: one disk, stored and deflate, ZIP64, UTF-8 names; not encryption.
//
// Thread safety: after construction a ZipReader is immutable; read(), read_all() and verify()
// use File::pread_all and per-call state, so several threads may read from one reader at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "posix_file.h"

namespace tth::container {

/// One member as the central directory describes it.
struct ZipEntry {
  std::string name;                  ///< Member name, bytes as stored (UTF-8 or ASCII).
  uint16_t method = 0;               ///< Zip method code; Compression lists the readable ones.
  uint16_t flags = 0;                ///< General purpose flags (see zip_format.h).
  uint32_t crc32 = 0;                ///< CRC-32 of the uncompressed data.
  uint64_t compressed_size = 0;      ///< Bytes of member data in the file.
  uint64_t uncompressed_size = 0;    ///< Bytes read() delivers.
  uint64_t local_header_offset = 0;  ///< Offset of the local header in the file.
  uint64_t data_offset = 0;          ///< Offset of the member data (after the LOCAL name+extra).
};

/// Read-only access to the members of one zip archive.
class ZipReader {
 public:
  /// Receives the uncompressed data of a member, in order, in chunks of at most 1 MiB.
  using Sink = std::function<void(const uint8_t* data, std::size_t size)>;

  /// Opens and indexes the archive at `path`; keeps it open until destruction. Throws
  /// tth::IOError if it cannot be opened or read, tth::FormatError if it is not a valid zip or
  /// not a regular file (a directory, or a FIFO, refused before it is read: no hang).
  explicit ZipReader(const std::string& path);
  /// Indexes the archive in `data[0, size)`, which must outlive the reader (no copy is made).
  /// Errors name the file "<memory>". Throws tth::FormatError if it is not a valid zip.
  ZipReader(const void* data, std::size_t size);
  /// Closes the file, if any.
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  /// The members in central directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  /// The member named `name`, or nullptr. The pointer lives as long as the reader.
  const ZipEntry* find(const std::string& name) const;

  /// Streams the uncompressed data of `entry` (one of entries()) to `sink` (may be empty), then
  /// checks its size and CRC-32. Throws tth::FormatError on corrupt data, an unsupported method
  /// or encryption, and "CRC-32 mismatch (stored 0x..., computed 0x...)" on a bad checksum; the
  /// sink may already have received data then. Exceptions thrown by the sink propagate.
  void read(const ZipEntry& entry, const Sink& sink) const;
  /// Returns the whole uncompressed data of `entry`, checked as read() checks it.
  std::vector<uint8_t> read_all(const ZipEntry& entry) const;
  /// Reads every member and checks its size and CRC-32; throws like read() on the first failure.
  void verify() const;

  /// "file '<path>'" or "<memory>": how errors name this archive.
  const std::string& label() const { return label_; }

 private:
  struct Directory {
    uint64_t offset = 0;
    uint64_t size = 0;
    uint64_t entries = 0;
  };
  Directory locate_directory() const;
  void index();
  void read_zip64_extra(const uint8_t* extra, std::size_t size, ZipEntry& entry) const;
  void check_entry(ZipEntry& entry, uint64_t directory_offset) const;
  void check_overlaps(uint64_t directory_offset) const;
  void inflate(const ZipEntry& entry, const Sink& deliver) const;
  // Returns a pointer to bytes [offset, offset + size) of the archive, valid until `scratch`
  // changes; throws tth::FormatError if the range is not inside the archive.
  const uint8_t* fetch(uint64_t offset, std::size_t size, std::vector<uint8_t>& scratch) const;
  [[noreturn]] void fail(const std::string& message) const;
  [[noreturn]] void fail(const ZipEntry& entry, const std::string& message) const;

  std::string label_;
  std::optional<File> file_;       // The archive file; empty for a memory archive.
  const uint8_t* data_ = nullptr;  // Memory archive, or nullptr for a file.
  uint64_t size_ = 0;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, std::size_t> index_;  // Name -> position in entries_.
};

}  // namespace tth::container
