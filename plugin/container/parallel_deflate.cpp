#include "container/parallel_deflate.h"

#ifndef TTH_HAVE_LIBDEFLATE
#error "parallel_deflate.cpp needs libdeflate: define TTH_HAVE_LIBDEFLATE and link -ldeflate"
#endif
#include <libdeflate.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>

#include "container/crc32.h"
#include "container/endian.h"
#include "tth/error.h"

namespace tth::container {
namespace {

// A stored block (RFC 1951 3.2.4): a header byte (BFINAL, BTYPE 00, then padding to the byte
// boundary), LEN and its complement NLEN, then LEN bytes.
constexpr std::size_t kStoredHeaderSize = 5;
constexpr std::size_t kMaxStoredBytes = 0xFFFF;
constexpr uint8_t kStoredNotFinal = 0;

std::size_t stored_size(std::size_t size) {
  return size + (size + kMaxStoredBytes - 1) / kMaxStoredBytes * kStoredHeaderSize;
}

// Writes `data[0, size)` to `out` as non-final stored blocks; returns the end of what it wrote.
uint8_t* store(const char* data, std::size_t size, uint8_t* out) {
  while (size > 0) {
    const auto length = static_cast<uint16_t>(std::min(size, kMaxStoredBytes));
    out[0] = kStoredNotFinal;
    store_le16(out + 1, length);
    store_le16(out + 3, static_cast<uint16_t>(~length));
    std::memcpy(out + kStoredHeaderSize, data, length);
    out += kStoredHeaderSize + length;
    data += length;
    size -= length;
  }
  return out;
}

}  // namespace

struct ParallelDeflateWriter::Job {
  Member member;
  // Written by the worker; read by the writer's thread once `done` is set under the mutex.
  bool done = false;
  bool failed = false;
  std::string error;  // Why compressing failed.
  uint32_t crc = kCrc32Initial;
  Buffer compressed;
  std::size_t compressed_size = 0;

  // Compresses into `buffer`, or a larger one if it is too small.
  void compress(::libdeflate_compressor* compressor, Buffer buffer) {
    static const uint8_t kNothing = 0;  // libdeflate wants a pointer even for no bytes.
    const void* data = member.size > 0 ? member.data : &kNothing;
    const std::string& prefix = member.prefix;
    const std::size_t bound = libdeflate_deflate_compress_bound(compressor, member.size);
    const std::size_t capacity = stored_size(prefix.size()) + bound;
    if (bound < member.size || capacity < bound) throw std::length_error("member too large");
    if (buffer.capacity < capacity) {  // Free the small one first: never hold both.
      buffer.bytes.reset();
      buffer.bytes.reset(new uint8_t[capacity]);
      buffer.capacity = capacity;
    }
    compressed = std::move(buffer);
    uint8_t* const begin = compressed.bytes.get();
    uint8_t* const end = store(prefix.data(), prefix.size(), begin);
    const std::size_t room = capacity - static_cast<std::size_t>(end - begin);
    const std::size_t size = libdeflate_deflate_compress(compressor, data, member.size, end, room);
    if (size == 0) throw std::runtime_error("libdeflate_deflate_compress had no room");
    compressed_size = static_cast<std::size_t>(end - begin) + size;
    crc =
        crc32_update(crc32_update(kCrc32Initial, prefix.data(), prefix.size()), data, member.size);
  }
};

void ParallelDeflateWriter::CompressorDeleter::operator()(
    ::libdeflate_compressor* compressor) const {
  libdeflate_free_compressor(compressor);
}

ParallelDeflateWriter::ParallelDeflateWriter(ZipWriter& writer, int level, unsigned threads)
    : writer_(writer) {
  const std::string where = "ZipWriter '" + writer.path() + "': ";
  if (level < ZipWriter::kDefaultLevel || level > ZipWriter::kMaxLevel) {
    throw Error(where + "deflate level must be -1 (default) or 0..9, got " + std::to_string(level));
  }
  const int libdeflate_level = level == ZipWriter::kDefaultLevel ? kDefaultLibdeflateLevel : level;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i) {
    Compressor compressor(libdeflate_alloc_compressor(libdeflate_level));
    if (!compressor) {
      throw Error(where + "libdeflate_alloc_compressor(" + std::to_string(libdeflate_level) +
                  ") failed: out of memory");
    }
    compressors_.push_back(std::move(compressor));
  }
  try {
    for (const Compressor& compressor : compressors_) {
      workers_.emplace_back(&ParallelDeflateWriter::work, this, compressor.get());
    }
  } catch (...) {
    stop();
    throw;
  }
}

ParallelDeflateWriter::~ParallelDeflateWriter() { stop(); }

void ParallelDeflateWriter::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_added_.notify_all();
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

void ParallelDeflateWriter::work(::libdeflate_compressor* compressor) {
  for (;;) {
    Job* job = nullptr;
    Buffer buffer;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_added_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      job = queued_.front();
      queued_.pop_front();
      if (!spare_.empty()) {
        buffer = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    try {
      job->compress(compressor, std::move(buffer));
    } catch (const std::exception& error) {
      job->failed = true;
      job->error = error.what();
    } catch (...) {
      job->failed = true;
      job->error = "unknown exception";
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job->done = true;
    }
    job_done_.notify_all();
  }
}

void ParallelDeflateWriter::add(Member member) {
  const auto over_budget = [this, &member] {
    return bytes_in_flight_ > kMaxBytesInFlight ||
           member.size > kMaxBytesInFlight - bytes_in_flight_;
  };
  while (!in_flight_.empty() && (in_flight_.size() > workers_.size() || over_budget())) {
    write_oldest();
  }
  auto job = std::make_unique<Job>();
  job->member = std::move(member);
  Job* queued = job.get();
  in_flight_.push_back(std::move(job));
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    queued_.push_back(queued);
  } catch (...) {
    in_flight_.pop_back();  // Never queued: no worker would ever finish it.
    throw;
  }
  bytes_in_flight_ += queued->member.size;
  work_added_.notify_one();
}

void ParallelDeflateWriter::finish() {
  while (!in_flight_.empty()) write_oldest();
}

void ParallelDeflateWriter::write_oldest() {
  Job& job = *in_flight_.front();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    job_done_.wait(lock, [&job] { return job.done; });
  }
  const Member& member = job.member;
  if (job.failed) {
    throw Error("ZipWriter '" + writer_.path() + "': member '" + member.name +
                "': compressing failed: " + job.error);
  }
  writer_.write_deflated(member.name, job.crc, uint64_t{member.prefix.size()} + member.size,
                         job.compressed.bytes.get(), job.compressed_size);
  bytes_in_flight_ -= member.size;
  {
    // At most one spare buffer per member in flight: enough for every worker to find one.
    std::lock_guard<std::mutex> lock(mutex_);
    if (spare_.size() <= workers_.size()) spare_.push_back(std::move(job.compressed));
  }
  in_flight_.pop_front();
}

}  // namespace tth::container
