// ZipWriter streams a zip archive (stored or raw-deflate members, ZIP64 where needed) to a File,
// in the layout the .npz files of this library have (doc/npz_format.md describes it for users):
// each member is a local header without data descriptor, its name and its data; then one
// central directory entry per member, then a ZIP64 end record and locator only when a count,
// size or offset overflows its field, then the end record. zip_format.h lists the records.
//
// Members are written one at a time: begin_member(), any number of write() calls, end_member();
// or write_deflated() for a member compressed elsewhere (ParallelDeflateWriter). Then finish()
// writes the central directory and end records. A streamed member's CRC-32 and sizes are
// accumulated while its data streams and patched into the local header afterwards with
// File::pwrite_all, so the output needs no data descriptors and the payload is never held in
// memory. Small writes are gathered in a 1 MiB buffer; large ones go straight out through
// File::write_streaming, which starts their writeback to the disk at once.
//
// The caller owns the File and the atomic commit (temp file, fsync, rename): ZipWriter neither
// syncs nor closes it. After an exception, or when destroyed before finish(), the output is
// incomplete and must be discarded. Not thread-safe: one writer per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "container/zip_format.h"
#include "posix_file.h"

namespace tth::container {

/// Writes a zip archive member by member to a seekable File.
class ZipWriter {
 public:
  /// Deflate level meaning "zlib's default" (6).
  static constexpr int kDefaultLevel = -1;
  /// Highest deflate level (best compression, slowest).
  static constexpr int kMaxLevel = 9;

  /// Writes to `file`: an empty regular file opened for writing (not O_APPEND), positioned at
  /// 0, which must outlive the writer. Errors name `file.path()`.
  explicit ZipWriter(File& file);
  /// Frees the deflate state; does not finish, flush or close anything.
  ~ZipWriter();
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  /// Starts member `name` (non-empty, at most 65,535 bytes, unique, else tth::Error naming it).
  /// `level` (kDefaultLevel or 0..kMaxLevel) applies to kDeflate only. `size_hint`, the exact
  /// uncompressed size if known, lets a stored member below 4 GiB skip the 20-byte ZIP64 extra
  /// that is otherwise reserved in its local header. Throws tth::Error inside a member or after
  /// finish(), tth::IOError if writing fails.
  void begin_member(std::string name, Compression method = Compression::kStored,
                    int level = kDefaultLevel, std::optional<uint64_t> size_hint = std::nullopt);

  /// Appends `size` bytes of the current member's uncompressed data. Throws tth::Error outside a
  /// member, tth::IOError if writing fails.
  void write(const void* data, std::size_t size);

  /// Ends the current member and records its CRC-32 and sizes in its local header. Throws
  /// tth::Error outside a member or if a stored member reached 4 GiB although its size hint was
  /// below that (no room was reserved for ZIP64 sizes), tth::IOError if writing fails.
  void end_member();

  /// Writes a whole deflate member whose compressed bytes were made elsewhere (by
  /// ParallelDeflateWriter): `deflated[0, size)` must be one complete raw deflate stream (RFC
  /// 1951) of `uncompressed_size` bytes whose CRC-32 is `crc`. The sizes being known, the local
  /// header holds them, with the ZIP64 extra only when one reaches 4 GiB. Name rules and errors
  /// as begin_member(); throws tth::Error inside a member or after finish().
  void write_deflated(std::string name, uint32_t crc, uint64_t uncompressed_size,
                      const void* deflated, std::size_t size);

  /// Writes the central directory and end records and flushes everything to the file.
  /// Throws tth::Error inside a member or when called twice, tth::IOError if writing fails.
  void finish();

  /// Bytes of the archive produced so far, including those still in the buffer.
  uint64_t bytes_written() const { return flushed_ + buffered_; }
  /// The path of the file written to, for error messages.
  const std::string& path() const { return file_.path(); }

 private:
  struct Member {
    std::string name;
    uint16_t flags = 0;
    Compression method = Compression::kStored;
    bool local_zip64 = false;  // The local header carries the ZIP64 extra with both sizes.
    uint32_t crc = 0;
    uint64_t compressed_size = 0;
    uint64_t uncompressed_size = 0;
    uint64_t local_header_offset = 0;
  };
  struct Deflater;  // zlib stream, kept out of this header.
  enum class State { kIdle, kInMember, kFinished };

  [[noreturn]] void fail(const std::string& message) const;  // tth::Error naming the file.
  void require_state(State expected, const char* operation) const;
  // A member named `name` at the current offset, after checking the name and method.
  Member new_member(std::string name, Compression method) const;
  std::vector<uint8_t> local_header(const Member& member) const;
  void append_central_entry(const Member& member, std::vector<uint8_t>& out) const;
  void deflate(const uint8_t* data, std::size_t size, bool finish);
  void emit(const void* data, std::size_t size);
  void flush();

  File& file_;
  std::unique_ptr<uint8_t[]> buffer_;
  std::size_t buffered_ = 0;  // Bytes in buffer_, not yet written.
  uint64_t flushed_ = 0;      // Bytes written to file_, all before those in buffer_.
  State state_ = State::kIdle;
  std::vector<Member> members_;  // The current member is members_.back().
  std::unordered_set<std::string> names_;
  std::unique_ptr<Deflater> deflater_;  // Set while a deflate member is open.
};

}  // namespace tth::container
