// ParallelDeflateWriter compresses zip members with libdeflate on a pool of worker threads and
// hands them to a ZipWriter strictly in the order they were added, so the archive's bytes do not
// depend on the thread count or on timing.
//
// libdeflate compresses a whole buffer per call (2.5 times zlib's speed on float weights here)
// and always ends its output with a final block, so one member cannot be split into pieces
// compressed on several threads. The parallelism is across members: while the caller's thread
// writes finished members (and prepares the next ones), `threads` workers compress the following
// ones, each with its own libdeflate_compressor. Each member is compressed alone, the same way
// whatever the thread count.
//
// A member is a raw deflate stream (RFC 1951) of `prefix` then `data`: the prefix (an .npy
// header) in stored blocks (BTYPE 00, BFINAL 0, at most 65,535 bytes each; a stored block ends
// on a byte boundary), followed by libdeflate's complete stream of the data, whose last block is
// the final one. So the data is compressed straight from the caller's memory, never copied
// behind its header, and any inflater reads the concatenation as one stream. The CRC-32 is
// computed by the worker too.
//
// Memory: a member's compressed bytes (about its size, for float weights) are held until it is
// written. At most threads + 1 members are in flight (queued, compressing or waiting to be
// written), and any beyond the oldest only while the data of all of them sums to at most
// kMaxBytesInFlight: add() first writes the oldest members until the new one fits. The output
// buffers are reused from member to member until destruction; there are never more than
// threads + 1. A member's data must stay valid until it is written; its `owner` can keep it
// alive.
//
// Errors: a worker's failure (out of memory) is rethrown by add() or finish() when its member is
// the next to write, as tth::Error naming the file and the member; writing errors are
// ZipWriter's (tth::IOError naming the file). The destructor stops the workers and joins them,
// after the members they are compressing, on every path, exceptions included; members not yet
// written are dropped, and the archive is then incomplete. Not thread-safe: add() and finish()
// from one thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "container/zip_writer.h"

struct libdeflate_compressor;  // <libdeflate.h>, kept out of this header.

namespace tth::container {

/// Adds deflate members to a ZipWriter, compressing them on worker threads.
class ParallelDeflateWriter {
 public:
  /// Data of the members in flight beyond the oldest, at most (1 GiB).
  static constexpr uint64_t kMaxBytesInFlight = uint64_t{1} << 30;
  /// libdeflate's level for ZipWriter::kDefaultLevel: 6, as zlib's default.
  static constexpr int kDefaultLibdeflateLevel = 6;

  /// A member to add: `prefix` kept as it is (stored blocks), then `size` bytes at `data`
  /// compressed; the member holds both, in this order.
  struct Member {
    /// The member's name in the archive (ZipWriter's rules).
    std::string name;
    /// Bytes stored uncompressed ahead of the data: the .npy header. May be empty.
    std::string prefix;
    /// The bytes to compress; may be null when `size` is 0.
    const void* data = nullptr;
    std::size_t size = 0;
    /// Keeps `data` alive until the member is written; may be null when the caller does.
    std::shared_ptr<const void> owner;
  };

  /// Adds members to `writer`, which must outlive this object and have no member open.
  /// `level`: ZipWriter::kDefaultLevel or 0..ZipWriter::kMaxLevel, mapped to libdeflate's level of
  /// the same number (-1 to 6; 0 is stored blocks, 1 to 9 about zlib's ratios). `threads`: the
  /// worker count, 0 for std::thread::hardware_concurrency() (at least 1). Throws tth::Error
  /// for a bad level or when a compressor cannot be allocated.
  ParallelDeflateWriter(ZipWriter& writer, int level, unsigned threads = 0);
  /// Stops and joins the workers; drops the members not yet written (see the header comment).
  ~ParallelDeflateWriter();
  ParallelDeflateWriter(const ParallelDeflateWriter&) = delete;
  ParallelDeflateWriter& operator=(const ParallelDeflateWriter&) = delete;

  /// Queues `member` for compression, after writing the oldest members, in order, while too
  /// many are in flight. Throws what writing them throws (see the header comment).
  void add(Member member);

  /// Writes every member added so far, in order (not the central directory: that is
  /// ZipWriter::finish()). Throws as add().
  void finish();

  /// The number of worker threads.
  unsigned threads() const { return static_cast<unsigned>(workers_.size()); }

 private:
  struct Job;
  // Output memory, reused from member to member: fresh memory costs a page fault per 4 KiB on
  // first touch (3 us each in this VM, 5% of the time libdeflate takes for the page).
  struct Buffer {
    std::unique_ptr<uint8_t[]> bytes;
    std::size_t capacity = 0;
  };
  struct CompressorDeleter {
    void operator()(::libdeflate_compressor* compressor) const;
  };
  using Compressor = std::unique_ptr<::libdeflate_compressor, CompressorDeleter>;

  void work(::libdeflate_compressor* compressor);
  void write_oldest();
  void stop() noexcept;

  ZipWriter& writer_;
  std::vector<Compressor> compressors_;  // One per worker.
  std::vector<std::thread> workers_;
  std::deque<std::unique_ptr<Job>> in_flight_;  // Added, not yet written; oldest first.
  uint64_t bytes_in_flight_ = 0;                // Data bytes of in_flight_.

  std::mutex mutex_;  // Guards the fields below and each Job's `done`.
  std::condition_variable work_added_;
  std::condition_variable job_done_;
  std::deque<Job*> queued_;    // In in_flight_, not yet taken by a worker; oldest first.
  std::vector<Buffer> spare_;  // Buffers of written members, for the next ones.
  bool stopping_ = false;
};

}  // namespace tth::container
