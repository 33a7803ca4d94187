#include "container/zip_reader.h"

#define ZLIB_CONST  // const-correct next_in
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "container/crc32.h"
#include "container/endian.h"
#include "container/zip_format.h"
#include "tth/error.h"

namespace tth::container {
namespace {

// Members are streamed in chunks of this size: bounded memory whatever the member size.
constexpr std::size_t kChunkSize = std::size_t{1} << 20;

// Whether [offset, offset + size) lies inside [0, limit), without overflowing.
bool fits(uint64_t offset, uint64_t size, uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

std::string hex32(uint32_t value) {
  char text[sizeof "0x12345678"];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

struct Inflater {
  z_stream stream{};
  ~Inflater() { inflateEnd(&stream); }
};

}  // namespace

ZipReader::ZipReader(const std::string& path)
    : label_("file '" + path + "'"), file_(File::open_regular(path)) {
  size_ = file_->size();
  index();
}

ZipReader::ZipReader(const void* data, std::size_t size)
    : label_("<memory>"), data_(static_cast<const uint8_t*>(data)), size_(size) {
  index();
}

ZipReader::~ZipReader() = default;

void ZipReader::fail(const std::string& message) const {
  throw FormatError(label_ + ": " + message);
}

void ZipReader::fail(const ZipEntry& entry, const std::string& message) const {
  fail("member '" + entry.name + "': " + message);
}

const uint8_t* ZipReader::fetch(uint64_t offset, std::size_t size,
                                std::vector<uint8_t>& scratch) const {
  if (!fits(offset, size, size_)) {
    fail("truncated: bytes [" + std::to_string(offset) + ", +" + std::to_string(size) +
         ") lie beyond its " + std::to_string(size_) + " bytes");
  }
  if (data_ != nullptr) return data_ + offset;
  scratch.resize(size);
  if (file_->pread_all(scratch.data(), size, offset) < size) {
    fail("truncated while reading (file shrank?)");
  }
  return scratch.data();
}

ZipReader::Directory ZipReader::locate_directory() const {
  std::vector<uint8_t> scratch;
  if (size_ < zip::end::kSize) fail("not a zip file: too short for an end record");
  // The end record is last, followed only by its comment: search backwards over that much.
  const auto tail_size =
      static_cast<std::size_t>(std::min<uint64_t>(size_, zip::end::kSize + zip::end::kMaxComment));
  const uint64_t tail_offset = size_ - tail_size;
  const uint8_t* tail = fetch(tail_offset, tail_size, scratch);
  std::size_t end_pos = tail_size - zip::end::kSize + 1;
  do {
    if (end_pos-- == 0) fail("not a zip file: no end of central directory record");
  } while (load_le32(tail + end_pos) != zip::end::kSignature ||
           load_le16(tail + end_pos + zip::end::kCommentLength) >
               tail_size - end_pos - zip::end::kSize);
  const uint8_t* end = tail + end_pos;
  if (load_le16(end + zip::end::kDisk) != 0 || load_le16(end + zip::end::kDirectoryDisk) != 0) {
    fail("multi-disk archives are not supported");
  }
  Directory directory;
  directory.entries = load_le16(end + zip::end::kEntries);
  directory.size = load_le32(end + zip::end::kDirectorySize);
  directory.offset = load_le32(end + zip::end::kDirectoryOffset);
  const uint64_t end_offset = tail_offset + end_pos;
  uint64_t limit = end_offset;  // The directory ends where the next record starts.

  if (end_offset >= zip::zip64_locator::kSize) {
    const uint64_t locator_offset = end_offset - zip::zip64_locator::kSize;
    const uint8_t* locator = fetch(locator_offset, zip::zip64_locator::kSize, scratch);
    if (load_le32(locator) == zip::zip64_locator::kSignature) {
      const uint64_t record_offset = load_le64(locator + zip::zip64_locator::kRecordOffset);
      if (!fits(record_offset, zip::zip64_end::kSize, locator_offset)) {
        fail("ZIP64 end record offset " + std::to_string(record_offset) + " is out of range");
      }
      const uint8_t* record = fetch(record_offset, zip::zip64_end::kSize, scratch);
      if (load_le32(record) != zip::zip64_end::kSignature) {
        fail("no ZIP64 end record where its locator points");
      }
      directory.entries = load_le64(record + zip::zip64_end::kEntries);
      directory.size = load_le64(record + zip::zip64_end::kDirectorySize);
      directory.offset = load_le64(record + zip::zip64_end::kDirectoryOffset);
      limit = record_offset;
    }
  }
  if (!fits(directory.offset, directory.size, limit)) {
    fail("central directory [" + std::to_string(directory.offset) + ", +" +
         std::to_string(directory.size) + ") does not end before offset " + std::to_string(limit));
  }
  // Checked before anything is reserved: each entry takes at least a fixed-size header.
  if (directory.entries > directory.size / zip::central::kSize) {
    fail("end record claims " + std::to_string(directory.entries) + " entries, but the " +
         std::to_string(directory.size) + "-byte central directory holds at most " +
         std::to_string(directory.size / zip::central::kSize));
  }
  return directory;
}

void ZipReader::index() {
  const Directory directory = locate_directory();
  std::vector<uint8_t> scratch;
  const uint8_t* records =
      fetch(directory.offset, static_cast<std::size_t>(directory.size), scratch);
  entries_.reserve(static_cast<std::size_t>(directory.entries));
  std::size_t pos = 0;
  for (uint64_t i = 0; i < directory.entries; ++i) {
    const auto bad_record = [&](const char* what) {
      fail("central directory entry " + std::to_string(i) + ": " + what);
    };
    const uint8_t* header = records + pos;
    if (directory.size - pos < zip::central::kSize) bad_record("truncated");
    if (load_le32(header) != zip::central::kSignature) bad_record("bad signature");
    const std::size_t name_length = load_le16(header + zip::central::kNameLength);
    const std::size_t extra_length = load_le16(header + zip::central::kExtraLength);
    const std::size_t record_size = zip::central::kSize + name_length + extra_length +
                                    load_le16(header + zip::central::kCommentLength);
    if (directory.size - pos < record_size) bad_record("truncated");
    pos += record_size;

    ZipEntry entry;
    entry.name.assign(reinterpret_cast<const char*>(header + zip::central::kSize), name_length);
    entry.flags = load_le16(header + zip::central::kFlags);
    entry.method = load_le16(header + zip::central::kMethod);
    entry.crc32 = load_le32(header + zip::central::kCrc);
    entry.compressed_size = load_le32(header + zip::central::kCompressedSize);
    entry.uncompressed_size = load_le32(header + zip::central::kUncompressedSize);
    entry.local_header_offset = load_le32(header + zip::central::kLocalHeaderOffset);
    read_zip64_extra(header + zip::central::kSize + name_length, extra_length, entry);
    if (!index_.emplace(entry.name, entries_.size()).second) fail(entry, "duplicate member name");
    check_entry(entry, directory.offset);
    entries_.push_back(std::move(entry));
  }
  check_overlaps(directory.offset);
}

// Replaces the fields holding kMax32 by the 64-bit values of the ZIP64 extra, in field order.
void ZipReader::read_zip64_extra(const uint8_t* extra, std::size_t size, ZipEntry& entry) const {
  for (std::size_t at = 0; size - at >= zip::kExtraHeaderSize;) {
    const uint16_t id = load_le16(extra + at);
    const std::size_t block_size = load_le16(extra + at + sizeof(id));
    at += zip::kExtraHeaderSize;
    if (block_size > size - at) fail(entry, "extra field overruns its length");
    if (id == zip::kZip64ExtraId) {
      std::size_t used = 0;
      for (uint64_t* field :
           {&entry.uncompressed_size, &entry.compressed_size, &entry.local_header_offset}) {
        if (*field != zip::kMax32) continue;
        if (block_size - used < sizeof(uint64_t)) fail(entry, "ZIP64 extra field too short");
        *field = load_le64(extra + at + used);
        used += sizeof(uint64_t);
      }
    }
    at += block_size;
  }
}

// Validates one entry against the file and its local header, and sets its data offset.
void ZipReader::check_entry(ZipEntry& entry, uint64_t directory_offset) const {
  // The declared size must be one the data can produce, so that no reader ever sizes memory
  // beyond what the file holds: equal for stored data, at most kMaxDeflateRatio times the
  // compressed size for deflate, and nothing can be promised for other methods.
  if (entry.method == static_cast<uint16_t>(Compression::kStored)) {
    if (entry.compressed_size != entry.uncompressed_size) {
      fail(entry, "stored member with compressed size " + std::to_string(entry.compressed_size) +
                      " != uncompressed size " + std::to_string(entry.uncompressed_size));
    }
  } else if (entry.method == static_cast<uint16_t>(Compression::kDeflate)) {
    // uncompressed > kMaxDeflateRatio * compressed, without overflowing.
    const uint64_t whole = entry.uncompressed_size / kMaxDeflateRatio;
    if (whole > entry.compressed_size ||
        (whole == entry.compressed_size && entry.uncompressed_size % kMaxDeflateRatio != 0)) {
      fail(entry, "uncompressed size " + std::to_string(entry.uncompressed_size) +
                      " is impossible for " + std::to_string(entry.compressed_size) +
                      " deflated bytes (deflate expands at most " +
                      std::to_string(kMaxDeflateRatio) + " times)");
    }
  } else {
    fail(entry, "unsupported compression method " + std::to_string(entry.method));
  }
  const std::size_t header_size = zip::local::kSize + entry.name.size();
  if (!fits(entry.local_header_offset, header_size, directory_offset)) {
    fail(entry,
         "local header offset " + std::to_string(entry.local_header_offset) + " is out of range");
  }
  std::vector<uint8_t> scratch;
  const uint8_t* header = fetch(entry.local_header_offset, header_size, scratch);
  if (load_le32(header) != zip::local::kSignature) fail(entry, "bad local header signature");
  const std::size_t name_length = load_le16(header + zip::local::kNameLength);
  const auto* name = reinterpret_cast<const char*>(header + zip::local::kSize);
  if (name_length != entry.name.size() || std::memcmp(name, entry.name.data(), name_length) != 0) {
    fail(entry, "local header name '" +
                    std::string(name, std::min(name_length, entry.name.size())) +
                    "' does not match the central directory");
  }
  entry.data_offset =
      entry.local_header_offset + header_size + load_le16(header + zip::local::kExtraLength);
  if (!fits(entry.data_offset, entry.compressed_size, directory_offset)) {
    fail(entry, "data [" + std::to_string(entry.data_offset) + ", +" +
                    std::to_string(entry.compressed_size) +
                    ") runs into the central directory at " + std::to_string(directory_offset));
  }
}

void ZipReader::check_overlaps(uint64_t directory_offset) const {
  std::vector<const ZipEntry*> by_offset;
  by_offset.reserve(entries_.size());
  for (const ZipEntry& entry : entries_) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const ZipEntry* a, const ZipEntry* b) {
    return a->local_header_offset < b->local_header_offset;
  });
  for (std::size_t i = 0; i < by_offset.size(); ++i) {
    const uint64_t next_start =
        i + 1 < by_offset.size() ? by_offset[i + 1]->local_header_offset : directory_offset;
    // check_entry() made data_offset + compressed_size <= directory_offset: no overflow.
    if (by_offset[i]->data_offset + by_offset[i]->compressed_size > next_start) {
      fail(*by_offset[i], "overlaps the member at offset " + std::to_string(next_start));
    }
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void ZipReader::read(const ZipEntry& entry, const Sink& sink) const {
  if ((entry.flags & zip::kFlagEncrypted) != 0) fail(entry, "encrypted members are not supported");
  uint32_t crc = kCrc32Initial;
  uint64_t produced = 0;
  const Sink deliver = [&](const uint8_t* data, std::size_t size) {
    if (size > entry.uncompressed_size - produced) {
      fail(entry, "data is longer than its size " + std::to_string(entry.uncompressed_size));
    }
    crc = crc32_update(crc, data, size);
    produced += size;
    if (sink) sink(data, size);
  };
  if (entry.method == static_cast<uint16_t>(Compression::kStored)) {
    std::vector<uint8_t> scratch;
    for (uint64_t done = 0; done < entry.compressed_size;) {
      const auto size =
          static_cast<std::size_t>(std::min<uint64_t>(kChunkSize, entry.compressed_size - done));
      deliver(fetch(entry.data_offset + done, size, scratch), size);
      done += size;
    }
  } else if (entry.method == static_cast<uint16_t>(Compression::kDeflate)) {
    inflate(entry, deliver);
  } else {  // check_entry() refuses these; an entry not taken from entries() may still hold one
    fail(entry, "unsupported compression method " + std::to_string(entry.method));
  }
  if (produced != entry.uncompressed_size) {
    fail(entry, "data has " + std::to_string(produced) + " bytes, the central directory says " +
                    std::to_string(entry.uncompressed_size));
  }
  if (crc != entry.crc32) {
    fail(entry, "CRC-32 mismatch (stored " + hex32(entry.crc32) + ", computed " + hex32(crc) + ")");
  }
}

void ZipReader::inflate(const ZipEntry& entry, const Sink& deliver) const {
  Inflater inflater;
  z_stream& stream = inflater.stream;
  // Negative window bits: a raw deflate stream, as zip stores it.
  if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) fail(entry, "inflateInit2 failed");
  std::vector<uint8_t> input;
  // One byte more than expected, so that overlong data is seen; small members stay cheap.
  const auto output_size =
      static_cast<std::size_t>(std::min<uint64_t>(kChunkSize - 1, entry.uncompressed_size)) + 1;
  const std::unique_ptr<uint8_t[]> output(new uint8_t[output_size]);
  uint64_t fetched = 0;
  for (int rc = Z_OK; rc != Z_STREAM_END;) {
    // Even with all input consumed, zlib may still hold output (the rest of a long match).
    if (stream.avail_in == 0 && fetched < entry.compressed_size) {
      const auto size =
          static_cast<std::size_t>(std::min<uint64_t>(kChunkSize, entry.compressed_size - fetched));
      stream.next_in = fetch(entry.data_offset + fetched, size, input);
      stream.avail_in = static_cast<uInt>(size);
      fetched += size;
    }
    stream.next_out = output.get();
    stream.avail_out = static_cast<uInt>(output_size);
    rc = ::inflate(&stream, Z_NO_FLUSH);
    // With room for output, "no progress" means the input ran out before the stream's end.
    if (rc == Z_BUF_ERROR) fail(entry, "deflate stream is truncated");
    if (rc != Z_OK && rc != Z_STREAM_END) {
      fail(entry, std::string("corrupt deflate data (") +
                      (stream.msg != nullptr ? stream.msg : "zlib error") + ")");
    }
    deliver(output.get(), output_size - stream.avail_out);
  }
  if (stream.avail_in != 0 || fetched != entry.compressed_size) {
    fail(entry,
         "deflate stream ends before its compressed size " + std::to_string(entry.compressed_size));
  }
}

std::vector<uint8_t> ZipReader::read_all(const ZipEntry& entry) const {
  std::vector<uint8_t> data;
  // What the member declares, which check_entry() bounded by what its data can produce.
  data.reserve(static_cast<std::size_t>(entry.uncompressed_size));
  read(entry, [&data](const uint8_t* chunk, std::size_t size) {
    data.insert(data.end(), chunk, chunk + size);
  });
  return data;
}

void ZipReader::verify() const {
  for (const ZipEntry& entry : entries_) read(entry, nullptr);
}

}  // namespace tth::container
