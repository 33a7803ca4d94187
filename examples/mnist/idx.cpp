#include "idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <memory>

#include "tth/error.h"

namespace mnist {

namespace {

constexpr uint8_t kGzipSignature[2] = {0x1f, 0x8b};
// The IDX magic number: two zero bytes, the element type, the dimension count.
constexpr size_t kMagicBytes = 4;
constexpr size_t kDimensionBytes = 4;
constexpr uint32_t kImageDimensions = 3;
constexpr uint32_t kLabelDimensions = 1;
// Bytes read or inflated per step.
constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr size_t kInputChunkBytes = size_t{64} << 10;
// Trailing data is counted up to this many bytes, then reported as "more than".
constexpr uint64_t kTrailingCountLimit = uint64_t{1} << 20;
// Bytes reserved for inflated data per compressed byte: a typical IDX ratio, not a bound
// (the buffer grows further as bytes arrive).
constexpr uint64_t kReserveRatio = 4;

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
  throw tth::FormatError(name + ": " + problem);
}

std::string hex(uint64_t value, int digits) {
  char text[32];
  std::snprintf(text, sizeof text, "0x%0*llX", digits, static_cast<unsigned long long>(value));
  return text;
}

uint32_t big_endian_u32(const uint8_t* bytes) {
  return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 |
         uint32_t{bytes[3]};
}

// The IDX element types other than unsigned bytes, named in the refusal.
const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return nullptr;
  }
}

// A file's bytes, front to back: reads up to `size` bytes, fewer only at the end.
class Input {
 public:
  virtual ~Input() = default;
  virtual size_t read(uint8_t* out, size_t size) = 0;
  // Bytes left, as far as known: a hint for reserving memory.
  virtual uint64_t remaining_hint() const = 0;
};

class MemoryInput : public Input {
 public:
  MemoryInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t read(uint8_t* out, size_t size) override {
    const size_t n = std::min(size, size_ - position_);
    if (n > 0) std::copy(data_ + position_, data_ + position_ + n, out);
    position_ += n;
    return n;
  }
  uint64_t remaining_hint() const override { return size_ - position_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t position_ = 0;
};

class FileInput : public Input {
 public:
  explicit FileInput(const std::string& path) : path_(path) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw tth::IOError("open", path, errno);
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
      const int error = errno;
      ::close(fd);
      throw tth::IOError("stat", path, error);
    }
    // A FIFO or a device would never end, and a directory cannot be read.
    if (!S_ISREG(info.st_mode)) {
      ::close(fd);
      fail(path, "not a regular file");
    }
    file_.reset(::fdopen(fd, "rb"));
    if (!file_) {
      const int error = errno;
      ::close(fd);
      throw tth::IOError("fdopen", path, error);
    }
    size_ = static_cast<uint64_t>(info.st_size);
  }
  size_t read(uint8_t* out, size_t size) override {
    const size_t n = std::fread(out, 1, size, file_.get());
    if (n < size && std::ferror(file_.get())) throw tth::IOError("read", path_, errno);
    position_ += n;
    return n;
  }
  uint64_t remaining_hint() const override { return size_ > position_ ? size_ - position_ : 0; }

 private:
  struct Closer {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Closer> file_;
  uint64_t size_ = 0;
  uint64_t position_ = 0;
};

// Puts bytes already read back in front of an input (the gzip signature check reads two).
class PrefixedInput : public Input {
 public:
  PrefixedInput(const uint8_t* prefix, size_t size, Input& rest)
      : prefix_(prefix, prefix + size), rest_(rest) {}
  size_t read(uint8_t* out, size_t size) override {
    size_t n = std::min(size, prefix_.size() - position_);
    std::copy(prefix_.begin() + position_, prefix_.begin() + position_ + n, out);
    position_ += n;
    if (n < size) n += rest_.read(out + n, size - n);
    return n;
  }
  uint64_t remaining_hint() const override {
    return prefix_.size() - position_ + rest_.remaining_hint();
  }

 private:
  std::vector<uint8_t> prefix_;
  size_t position_ = 0;
  Input& rest_;
};

// The inflated bytes of a gzip input. Concatenated gzip members are read as one stream, as
// gzip(1) reads them; every member's CRC-32 and length are checked by zlib at its end.
class GzipInput : public Input {
 public:
  GzipInput(Input& compressed, std::string name)
      : compressed_(compressed), name_(std::move(name)), buffer_(kInputChunkBytes) {
    // 16 + MAX_WBITS: a gzip wrapper only (a zlib or raw deflate stream is refused).
    if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
      throw tth::Error(name_ + ": cannot start zlib's inflate (out of memory?)");
    }
  }
  ~GzipInput() override { inflateEnd(&stream_); }
  GzipInput(const GzipInput&) = delete;
  GzipInput& operator=(const GzipInput&) = delete;

  size_t read(uint8_t* out, size_t size) override {
    size_t produced = 0;
    while (produced < size && !ended_) {
      if (stream_.avail_in == 0) refill();
      if (member_ended_) {
        // Another member follows, or the stream has ended.
        if (stream_.avail_in == 0) {
          ended_ = true;
          break;
        }
        inflateReset(&stream_);
        member_ended_ = false;
      }
      stream_.next_out = out + produced;
      stream_.avail_out = static_cast<uInt>(std::min<size_t>(size - produced, kChunkBytes));
      const uInt before = stream_.avail_out;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      produced += before - stream_.avail_out;
      switch (status) {
        case Z_OK:
          break;
        case Z_STREAM_END:
          member_ended_ = true;
          break;
        case Z_BUF_ERROR:  // no progress: the input is exhausted
          if (input_ended_ && stream_.avail_in == 0) {
            fail(name_, "truncated gzip stream: the compressed data ends before its end marker");
          }
          break;
        case Z_MEM_ERROR:
          throw tth::Error(name_ + ": zlib's inflate ran out of memory");
        default:  // Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR
          fail(name_, std::string("corrupt gzip data: ") +
                          (stream_.msg != nullptr ? stream_.msg : "inflate failed"));
      }
    }
    return produced;
  }
  uint64_t remaining_hint() const override {
    const uint64_t left = compressed_.remaining_hint() + stream_.avail_in;
    return left > std::numeric_limits<uint64_t>::max() / kReserveRatio ? left
                                                                       : left * kReserveRatio;
  }

 private:
  void refill() {
    if (input_ended_) return;
    const size_t n = compressed_.read(buffer_.data(), buffer_.size());
    if (n == 0) input_ended_ = true;
    stream_.next_in = buffer_.data();
    stream_.avail_in = static_cast<uInt>(n);
  }

  Input& compressed_;
  std::string name_;
  std::vector<uint8_t> buffer_;
  z_stream stream_{};
  bool input_ended_ = false;
  bool member_ended_ = false;
  bool ended_ = false;
};

// What the file is expected to be.
struct Kind {
  uint32_t dimensions;
  const char* description;  // in "is not an IDX3 image file"
};
constexpr Kind kImages{kImageDimensions, "an IDX3 image file"};
constexpr Kind kLabels{kLabelDimensions, "an IDX1 label file"};

// "60000 images of 28x28" or "60000 labels".
std::string describe(const std::vector<uint32_t>& dims) {
  if (dims.size() == kImageDimensions) {
    return std::to_string(dims[0]) + " images of " + std::to_string(dims[1]) + "x" +
           std::to_string(dims[2]);
  }
  return std::to_string(dims[0]) + " labels";
}

// Reads and checks the header; returns the dimensions.
std::vector<uint32_t> read_header(Input& in, const std::string& name, const Kind& kind) {
  uint8_t magic[kMagicBytes];
  const size_t got = in.read(magic, kMagicBytes);
  if (got < kMagicBytes) {
    fail(name, "truncated: " + std::to_string(got) + " bytes, shorter than the " +
                   std::to_string(kMagicBytes) + "-byte IDX magic number");
  }
  const uint32_t value = big_endian_u32(magic);
  const uint32_t expected = uint32_t{kIdxUnsignedByte} << 8 | kind.dimensions;
  const std::string not_kind = "magic number " + hex(value, 8) + " is not " + kind.description +
                               " (" + hex(expected, 8) + ")";
  if (magic[0] != 0 || magic[1] != 0) fail(name, not_kind);
  if (magic[2] != kIdxUnsignedByte) {
    if (const char* type = idx_type_name(magic[2])) {
      fail(name, "element type " + hex(magic[2], 2) + " (" + type +
                     ") is not supported: MNIST-format files hold unsigned bytes (" +
                     hex(kIdxUnsignedByte, 2) + ")");
    }
    fail(name, not_kind + ": unknown element type " + hex(magic[2], 2));
  }
  if (magic[3] != kind.dimensions) {
    fail(name, not_kind + ": it has " + std::to_string(magic[3]) + " dimensions, not " +
                   std::to_string(kind.dimensions));
  }
  std::vector<uint32_t> dims(kind.dimensions);
  const size_t header_bytes = kMagicBytes + kDimensionBytes * kind.dimensions;
  for (uint32_t i = 0; i < kind.dimensions; ++i) {
    uint8_t bytes[kDimensionBytes];
    const size_t n = in.read(bytes, kDimensionBytes);
    if (n < kDimensionBytes) {
      fail(name, "truncated: the file ends after " +
                     std::to_string(kMagicBytes + kDimensionBytes * i + n) + " of its " +
                     std::to_string(header_bytes) + " header bytes");
    }
    dims[i] = big_endian_u32(bytes);
  }
  return dims;
}

// Reads the elements the header announces, then checks that nothing follows.
std::vector<uint8_t> read_elements(Input& in, const std::string& name,
                                   const std::vector<uint32_t>& dims, uint64_t max_bytes) {
  uint64_t total = 1;
  for (uint32_t dim : dims) {
    if (__builtin_mul_overflow(total, uint64_t{dim}, &total)) {
      fail(name, "header says " + describe(dims) + ": the size overflows 64 bits");
    }
  }
  const std::string announced = describe(dims) + " (" + std::to_string(total) + " bytes)";
  if (total > max_bytes || total > std::numeric_limits<size_t>::max()) {
    fail(name, "header says " + announced + ", more than the reader's limit of " +
                   std::to_string(max_bytes) + " bytes");
  }
  std::vector<uint8_t> data;
  // Memory follows the bytes that really arrive, never only the header's claim.
  data.reserve(static_cast<size_t>(std::min(total, in.remaining_hint())));
  while (data.size() < total) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, total - data.size()));
    const size_t offset = data.size();
    data.resize(offset + chunk);
    const size_t got = in.read(data.data() + offset, chunk);
    if (got < chunk) {
      fail(name, "truncated: header says " + announced + ", the file holds " +
                     std::to_string(offset + got));
    }
  }
  uint64_t trailing = 0;
  uint8_t discard[4096];
  while (trailing <= kTrailingCountLimit) {
    const size_t got = in.read(discard, sizeof discard);
    if (got == 0) break;
    trailing += got;
  }
  if (trailing > kTrailingCountLimit) {
    fail(name, "trailing data: the " + announced + " are followed by more than " +
                   std::to_string(kTrailingCountLimit) + " more bytes");
  }
  if (trailing > 0) {
    fail(name, "trailing data: the " + announced + " are followed by " + std::to_string(trailing) +
                   " more bytes");
  }
  return data;
}

// The decoded content of `raw`: inflated when it starts with the gzip signature.
template <typename Parse>
auto decode(Input& raw, const std::string& name, Parse&& parse) {
  uint8_t head[sizeof kGzipSignature];
  const size_t got = raw.read(head, sizeof head);
  PrefixedInput input(head, got, raw);
  if (got == sizeof head && head[0] == kGzipSignature[0] && head[1] == kGzipSignature[1]) {
    GzipInput inflated(input, name);
    return parse(inflated);
  }
  return parse(input);
}

IdxImages images_from(Input& in, const std::string& name, uint64_t max_bytes) {
  const std::vector<uint32_t> dims = read_header(in, name, kImages);
  if (dims[1] == 0 || dims[2] == 0) {
    fail(name, "header says " + describe(dims) + ": an image needs at least one pixel");
  }
  IdxImages images;
  images.pixels = read_elements(in, name, dims, max_bytes);
  images.count = dims[0];
  images.rows = dims[1];
  images.columns = dims[2];
  return images;
}

IdxLabels labels_from(Input& in, const std::string& name, uint64_t max_bytes) {
  const std::vector<uint32_t> dims = read_header(in, name, kLabels);
  IdxLabels labels;
  labels.labels = read_elements(in, name, dims, max_bytes);
  for (size_t i = 0; i < labels.labels.size(); ++i) {
    if (labels.labels[i] >= kClasses) {
      fail(name, "label " + std::to_string(labels.labels[i]) + " at index " + std::to_string(i) +
                     " is out of range 0.." + std::to_string(kClasses - 1));
    }
  }
  return labels;
}

bool is_regular_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

}  // namespace

IdxImages read_idx_images(const std::string& path, uint64_t max_bytes) {
  FileInput file(path);
  return decode(file, path, [&](Input& in) { return images_from(in, path, max_bytes); });
}

IdxLabels read_idx_labels(const std::string& path, uint64_t max_bytes) {
  FileInput file(path);
  return decode(file, path, [&](Input& in) { return labels_from(in, path, max_bytes); });
}

IdxImages parse_idx_images(const uint8_t* data, size_t size, const std::string& name,
                           uint64_t max_bytes) {
  MemoryInput memory(data, size);
  return decode(memory, name, [&](Input& in) { return images_from(in, name, max_bytes); });
}

IdxLabels parse_idx_labels(const uint8_t* data, size_t size, const std::string& name,
                           uint64_t max_bytes) {
  MemoryInput memory(data, size);
  return decode(memory, name, [&](Input& in) { return labels_from(in, name, max_bytes); });
}

void check_same_count(const IdxImages& images, const std::string& images_name,
                      const IdxLabels& labels, const std::string& labels_name) {
  if (images.count != labels.labels.size()) {
    throw tth::FormatError(images_name + " holds " + std::to_string(images.count) + " images but " +
                           labels_name + " holds " + std::to_string(labels.labels.size()) +
                           " labels");
  }
}

MnistFiles find_mnist_files(const std::string& directory) {
  static constexpr const char* kNames[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  std::string found[4];
  for (int i = 0; i < 4; ++i) {
    const std::string raw = directory + "/" + kNames[i];
    if (is_regular_file(raw)) {
      found[i] = raw;
    } else if (is_regular_file(raw + ".gz")) {
      found[i] = raw + ".gz";
    } else {
      std::string message = "MNIST data: neither '" + raw + "' nor '" + raw + ".gz' exists";
      if (directory == kDefaultDataDirectory) {
        message +=
            ": install Debian's dataset-fashion-mnist (apt-get install "
            "dataset-fashion-mnist), or name another directory with --data";
      } else {
        message +=
            ": --data must name a directory holding train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
            "(each raw or .gz)";
      }
      throw tth::Error(message);
    }
  }
  return {found[0], found[1], found[2], found[3]};
}

}  // namespace mnist
