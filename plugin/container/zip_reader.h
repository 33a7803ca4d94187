// ZipReader lists and reads the members of a zip archive (.npz, or a LibTorch/PyTorch archive)
// held in a file or in memory, and verifies their CRC-32s.
//
// Construction reads only the end records and the central directory, and validates them
// against the file before anything is allocated from them: every count, offset and size must
// lie inside the file, local headers must repeat the central names, members must not overlap,
// names must be unique, and every member's uncompressed size must be one its data can produce
// (equal to its compressed size when stored, at most kMaxDeflateRatio times it when deflated;
// other methods are refused), so no size a reader takes from the index exceeds what the file
// can deliver. Sizes and CRCs come from the central directory alone (local headers may
// hold zeros when data descriptors are used, or 0xFFFFFFFF with ZIP64). Members are streamed in
// bounded chunks (stored, or raw deflate through zlib) and their CRC-32 and size are checked
// when the last byte has been delivered, so a corrupt member fails before read() returns.
// read() and verify() use a fixed amount of memory whatever a member's size (a 4 GiB deflate
// bomb of 4 MB verifies in a few MiB); only read_all() holds a member.
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

/// The most a deflate stream can expand: every 258 output bytes cost at least 2 bits (a
/// one-bit length code and a one-bit distance code), so 8 bits yield at most 1032 bytes. A
/// member declaring more than this many times its compressed size is corrupt.
inline constexpr uint64_t kMaxDeflateRatio = 1032;

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
  /// tth::IOError if it cannot be opened or read, tth::FormatError if it is not a valid zip, not
  /// a regular file (a directory, or a FIFO, refused before it is read: no hang), or has a
  /// member of another method than stored or deflate or whose uncompressed size its data
  /// cannot produce ("member '<name>': uncompressed size N is impossible for M deflated
  /// bytes ...").
  explicit ZipReader(const std::string& path);
  /// Indexes the archive in `data[0, size)`, which must outlive the reader (no copy is made).
  /// Errors name the file "<memory>". Throws tth::FormatError as the other constructor does.
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
  /// checks its size and CRC-32. Throws tth::FormatError on corrupt data or encryption, and
  /// "CRC-32 mismatch (stored 0x..., computed 0x...)" on a bad checksum; the sink may already
  /// have received data then. Exceptions thrown by the sink propagate. Memory: one input and
  /// one output chunk of at most 1 MiB each, whatever the member's size.
  void read(const ZipEntry& entry, const Sink& sink) const;
  /// Returns the whole uncompressed data of `entry`, checked as read() checks it. Allocates the
  /// declared uncompressed size up front (bounded by the index checks, but up to
  /// kMaxDeflateRatio times the compressed size): stream with read() what may be large.
  std::vector<uint8_t> read_all(const ZipEntry& entry) const;
  /// Checks every member's size and CRC-32 by streaming it through read() without a sink: the
  /// data is not kept, so memory stays as bounded as read()'s. Throws like read() on the first
  /// failure. This is the call for "does this file verify".
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
