#include "container/zip_writer.h"

#define ZLIB_CONST  // const-correct next_in
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "container/crc32.h"
#include "container/endian.h"
#include "tth/error.h"

namespace tth::container {
namespace {

constexpr std::size_t kBufferSize = std::size_t{1} << 20;
// Stored writes at least this large compute their CRC-32 in parallel with the write.
constexpr std::size_t kParallelCrcBytes = std::size_t{4} << 20;
// zlib counts input in `uInt`; feed it at most this much per call.
constexpr std::size_t kMaxDeflateInput = std::size_t{1} << 30;
// zlib's default memory level (DEF_MEM_LEVEL is not exported by zlib.h).
constexpr int kDeflateMemLevel = 8;
bool has_non_ascii(const std::string& name) {
  constexpr unsigned char kFirstNonAscii = 0x80;
  return std::any_of(name.begin(), name.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= kFirstNonAscii; });
}

uint32_t clamp32(uint64_t value) {
  return static_cast<uint32_t>(std::min<uint64_t>(value, zip::kMax32));
}

}  // namespace

struct ZipWriter::Deflater {
  z_stream stream{};
  ~Deflater() { deflateEnd(&stream); }
};

ZipWriter::ZipWriter(File& file) : file_(file), buffer_(new uint8_t[kBufferSize]) {}

ZipWriter::~ZipWriter() = default;

void ZipWriter::fail(const std::string& message) const {
  throw Error("ZipWriter '" + file_.path() + "': " + message);
}

void ZipWriter::require_state(State expected, const char* operation) const {
  if (state_ == expected) return;
  static const char* const kStateNames[] = {"outside a member", "inside a member",
                                            "after finish()"};
  fail(std::string(operation) + " called " + kStateNames[static_cast<int>(state_)]);
}

ZipWriter::Member ZipWriter::new_member(std::string name, Compression method) const {
  const std::string where = "member '" + name + "': ";
  if (name.empty() || name.size() > zip::kMax16) {
    fail(where + "name must be 1 to 65535 bytes long, got " + std::to_string(name.size()));
  }
  if (method != Compression::kStored && method != Compression::kDeflate) {
    fail(where + "unknown compression method " + std::to_string(static_cast<int>(method)));
  }
  if (names_.count(name) != 0) fail(where + "duplicate member name");
  Member member;
  member.flags = has_non_ascii(name) ? zip::kFlagUtf8 : 0;
  member.method = method;
  member.local_header_offset = bytes_written();
  member.name = std::move(name);
  return member;
}

void ZipWriter::begin_member(std::string name, Compression method, int level,
                             std::optional<uint64_t> size_hint) {
  require_state(State::kIdle, "begin_member()");
  Member member = new_member(std::move(name), method);
  if (method == Compression::kDeflate && (level < kDefaultLevel || level > kMaxLevel)) {
    fail("member '" + member.name + "': deflate level must be -1 (default) or 0..9, got " +
         std::to_string(level));
  }
  // Deflate sizes are unknown until the end, so they always get room for 64-bit values.
  member.local_zip64 = method == Compression::kDeflate || !size_hint || *size_hint >= zip::kMax32;

  if (method == Compression::kDeflate) {
    auto deflater = std::make_unique<Deflater>();
    // Negative window bits: a raw deflate stream, without zlib's header and trailer.
    if (deflateInit2(&deflater->stream, level, Z_DEFLATED, -MAX_WBITS, kDeflateMemLevel,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      fail("member '" + member.name + "': deflateInit2 failed");
    }
    deflater_ = std::move(deflater);
  }
  const std::vector<uint8_t> header = local_header(member);
  emit(header.data(), header.size());
  names_.insert(member.name);
  members_.push_back(std::move(member));
  state_ = State::kInMember;
}

void ZipWriter::write_deflated(std::string name, uint32_t crc, uint64_t uncompressed_size,
                               const void* deflated, std::size_t size) {
  require_state(State::kIdle, "write_deflated()");
  Member member = new_member(std::move(name), Compression::kDeflate);
  member.crc = crc;
  member.uncompressed_size = uncompressed_size;
  member.compressed_size = size;
  member.local_zip64 = uncompressed_size >= zip::kMax32 || size >= zip::kMax32;
  const std::vector<uint8_t> header = local_header(member);
  emit(header.data(), header.size());
  emit(deflated, size);
  names_.insert(member.name);
  members_.push_back(std::move(member));
}

void ZipWriter::write(const void* data, std::size_t size) {
  require_state(State::kInMember, "write()");
  Member& member = members_.back();
  member.uncompressed_size += size;
  if (member.method == Compression::kStored) {
    if (size >= kParallelCrcBytes) {
      // The CRC costs about a tenth of a write+fsync: compute it on the other core while
      // write(2) copies the same bytes into the page cache.
      auto crc = std::async(std::launch::async, crc32_update, member.crc, data, size);
      try {
        emit(data, size);
      } catch (...) {
        crc.wait();
        throw;
      }
      member.crc = crc.get();
    } else {
      member.crc = crc32_update(member.crc, data, size);
      emit(data, size);
    }
    member.compressed_size += size;
    return;
  }
  member.crc = crc32_update(member.crc, data, size);
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const std::size_t chunk = std::min(size, kMaxDeflateInput);
    deflate(bytes, chunk, /*finish=*/false);
    bytes += chunk;
    size -= chunk;
  }
}

// Runs zlib on `data` straight into the output buffer, flushing the buffer whenever it fills.
void ZipWriter::deflate(const uint8_t* data, std::size_t size, bool finish) {
  z_stream& stream = deflater_->stream;
  stream.next_in = data;
  stream.avail_in = static_cast<uInt>(size);
  for (;;) {
    if (buffered_ == kBufferSize) flush();
    const std::size_t room = kBufferSize - buffered_;
    stream.next_out = buffer_.get() + buffered_;
    stream.avail_out = static_cast<uInt>(room);
    const int rc = ::deflate(&stream, finish ? Z_FINISH : Z_NO_FLUSH);
    if (rc == Z_STREAM_ERROR) {
      fail("member '" + members_.back().name + "': deflate failed");
    }
    const std::size_t produced = room - stream.avail_out;
    buffered_ += produced;
    members_.back().compressed_size += produced;
    // Without Z_FINISH, zlib is done once it consumed all input and did not fill the output.
    if (finish ? rc == Z_STREAM_END : (stream.avail_in == 0 && stream.avail_out != 0)) return;
  }
}

void ZipWriter::end_member() {
  require_state(State::kInMember, "end_member()");
  Member& member = members_.back();
  if (member.method == Compression::kDeflate) {
    deflate(nullptr, 0, /*finish=*/true);
    deflater_.reset();
  }
  if (!member.local_zip64 && member.compressed_size >= zip::kMax32) {
    fail("member '" + member.name + "' has " + std::to_string(member.uncompressed_size) +
         " bytes, but its size hint was below 4 GiB, so no ZIP64 extra was reserved");
  }
  const std::vector<uint8_t> header = local_header(member);
  if (member.local_header_offset >= flushed_) {
    // Still buffered: emit() never splits a record smaller than the buffer across a flush.
    std::memcpy(buffer_.get() + (member.local_header_offset - flushed_), header.data(),
                header.size());
  } else {
    file_.pwrite_all(header.data(), header.size(), member.local_header_offset);
  }
  state_ = State::kIdle;
}

std::vector<uint8_t> ZipWriter::local_header(const Member& member) const {
  std::vector<uint8_t> out;
  LeAppender(out)
      .u32(zip::local::kSignature)
      .u16(member.local_zip64 ? zip::kVersionZip64 : zip::kVersionDefault)
      .u16(member.flags)
      .u16(static_cast<uint16_t>(member.method))
      .u16(zip::kDosTime)
      .u16(zip::kDosDate)
      .u32(member.crc)
      .u32(member.local_zip64 ? zip::kMax32 : static_cast<uint32_t>(member.compressed_size))
      .u32(member.local_zip64 ? zip::kMax32 : static_cast<uint32_t>(member.uncompressed_size))
      .u16(static_cast<uint16_t>(member.name.size()))
      .u16(member.local_zip64 ? zip::kExtraHeaderSize + zip::kLocalZip64ExtraDataSize : 0)
      .bytes(member.name.data(), member.name.size());
  if (member.local_zip64) {
    LeAppender(out)
        .u16(zip::kZip64ExtraId)
        .u16(zip::kLocalZip64ExtraDataSize)
        .u64(member.uncompressed_size)
        .u64(member.compressed_size);
  }
  return out;
}

void ZipWriter::append_central_entry(const Member& member, std::vector<uint8_t>& out) const {
  // The central ZIP64 extra holds only the values that overflow, in this order.
  const uint64_t wide_values[] = {member.uncompressed_size, member.compressed_size,
                                  member.local_header_offset};
  const auto overflows = [](uint64_t value) { return value >= zip::kMax32; };
  const auto wide_count = std::count_if(std::begin(wide_values), std::end(wide_values), overflows);
  const auto wide_size = static_cast<uint16_t>(wide_count * sizeof(uint64_t));
  const bool zip64 = wide_count > 0;
  const uint16_t version = member.local_zip64 || zip64 ? zip::kVersionZip64 : zip::kVersionDefault;
  LeAppender append(out);
  append.u32(zip::central::kSignature)
      .u16(zip::kMadeByUnix | version)
      .u16(version)
      .u16(member.flags)
      .u16(static_cast<uint16_t>(member.method))
      .u16(zip::kDosTime)
      .u16(zip::kDosDate)
      .u32(member.crc)
      .u32(clamp32(member.compressed_size))
      .u32(clamp32(member.uncompressed_size))
      .u16(static_cast<uint16_t>(member.name.size()))
      .u16(zip64 ? zip::kExtraHeaderSize + wide_size : 0)
      .u16(0)  // comment length
      .u16(0)  // disk number
      .u16(0)  // internal attributes
      .u32(zip::kExternalAttributes)
      .u32(clamp32(member.local_header_offset))
      .bytes(member.name.data(), member.name.size());
  if (!zip64) return;
  append.u16(zip::kZip64ExtraId).u16(wide_size);
  for (uint64_t value : wide_values) {
    if (overflows(value)) append.u64(value);
  }
}

void ZipWriter::finish() {
  require_state(State::kIdle, "finish()");
  const uint64_t directory_offset = bytes_written();
  std::vector<uint8_t> records;
  for (const Member& member : members_) {
    append_central_entry(member, records);
    if (records.size() >= kBufferSize) {
      emit(records.data(), records.size());
      records.clear();
    }
  }
  emit(records.data(), records.size());
  records.clear();
  const uint64_t directory_size = bytes_written() - directory_offset;
  const uint64_t entries = members_.size();

  LeAppender out(records);
  if (entries >= zip::kMax16 || directory_offset >= zip::kMax32 || directory_size >= zip::kMax32) {
    const uint64_t zip64_end_offset = bytes_written();
    out.u32(zip::zip64_end::kSignature)
        .u64(zip::zip64_end::kRecordSizeValue)
        .u16(zip::kMadeByUnix | zip::kVersionZip64)
        .u16(zip::kVersionZip64)
        .u32(0)  // this disk
        .u32(0)  // disk with the central directory
        .u64(entries)
        .u64(entries)
        .u64(directory_size)
        .u64(directory_offset);
    out.u32(zip::zip64_locator::kSignature)
        .u32(0)  // disk with the ZIP64 end record
        .u64(zip64_end_offset)
        .u32(zip::zip64_locator::kTotalDisks);
  }
  const auto entries16 = static_cast<uint16_t>(std::min<uint64_t>(entries, zip::kMax16));
  out.u32(zip::end::kSignature)
      .u16(0)  // this disk
      .u16(0)  // disk with the central directory
      .u16(entries16)
      .u16(entries16)
      .u32(clamp32(directory_size))
      .u32(clamp32(directory_offset))
      .u16(0);  // comment length
  emit(records.data(), records.size());
  flush();
  state_ = State::kFinished;
}

void ZipWriter::emit(const void* data, std::size_t size) {
  if (size == 0) return;
  if (size > kBufferSize - buffered_) flush();
  if (size >= kBufferSize) {
    file_.write_streaming(data, size);
    flushed_ += size;
  } else {
    std::memcpy(buffer_.get() + buffered_, data, size);
    buffered_ += size;
  }
}

void ZipWriter::flush() {
  file_.write_all(buffer_.get(), buffered_);
  flushed_ += buffered_;
  buffered_ = 0;
}

}  // namespace tth::container
