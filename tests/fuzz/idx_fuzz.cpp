// libFuzzer target for the MNIST example's IDX reader (examples/mnist/idx.h): the image and
// the label parser on the raw input (gzip-inflated when it starts with 1f 8b). Properties
// checked beyond "no crash":
//   - a parsed file is consistent: count * rows * columns pixel bytes, labels in 0..9;
//   - an input that is not gzip parses the same, to the error message, after compressing it
//     with gzip: the gzip path neither accepts nor refuses anything the raw path does not;
//   - the reader allocates no more than its limit (kMaxBytes here) however large the header's
//     claim (the sanitizer's allocation and RSS limits would report it).
//
// Any exception other than tth::Error, any sanitizer report, leak, abort or timeout is a bug.
// Build and run:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -Iinclude -Iexamples/mnist tests/fuzz/idx_fuzz.cpp
//     examples/mnist/idx.cpp plugin/error.cpp -lz -o idx_fuzz
//   ./idx_fuzz -max_total_time=60 corpus/ seeds/
// tests/fuzz/run_fuzz.sh --target idx does all of this, with seeds (ctest -L fuzz).
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "idx.h"
#include "tth/error.h"

namespace {

// A limit far below the default, so that no input makes a run slow.
constexpr uint64_t kMaxBytes = uint64_t{1} << 20;

[[noreturn]] void bug() { std::abort(); }

// The outcome of one parse: the parsed bytes, or the error message.
struct Outcome {
  bool ok = false;
  std::string error;
  std::vector<uint8_t> bytes;
  bool operator==(const Outcome& other) const {
    return ok == other.ok && error == other.error && bytes == other.bytes;
  }
};

Outcome images(const uint8_t* data, size_t size) {
  Outcome outcome;
  try {
    mnist::IdxImages parsed = mnist::parse_idx_images(data, size, "images", kMaxBytes);
    const uint64_t expected = uint64_t{parsed.count} * parsed.rows * parsed.columns;
    if (parsed.pixels.size() != expected || parsed.rows == 0 || parsed.columns == 0) bug();
    outcome.ok = true;
    outcome.bytes = std::move(parsed.pixels);
  } catch (const tth::Error& error) {
    outcome.error = error.what();
    if (outcome.error.rfind("images: ", 0) != 0) bug();  // every message names the file
  }
  return outcome;
}

Outcome labels(const uint8_t* data, size_t size) {
  Outcome outcome;
  try {
    mnist::IdxLabels parsed = mnist::parse_idx_labels(data, size, "labels", kMaxBytes);
    for (uint8_t label : parsed.labels) {
      if (label >= mnist::kClasses) bug();
    }
    outcome.ok = true;
    outcome.bytes = std::move(parsed.labels);
  } catch (const tth::Error& error) {
    outcome.error = error.what();
    if (outcome.error.rfind("labels: ", 0) != 0) bug();
  }
  return outcome;
}

std::vector<uint8_t> gzip(const uint8_t* data, size_t size) {
  z_stream stream{};
  if (deflateInit2(&stream, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) bug();
  std::vector<uint8_t> out(deflateBound(&stream, size) + 64);
  stream.next_in = const_cast<uint8_t*>(data);
  stream.avail_in = static_cast<uInt>(size);
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  if (deflate(&stream, Z_FINISH) != Z_STREAM_END) bug();
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Outcome raw_images = images(data, size);
  const Outcome raw_labels = labels(data, size);
  const bool is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (!is_gzip) {
    const std::vector<uint8_t> compressed = gzip(data, size);
    if (!(images(compressed.data(), compressed.size()) == raw_images)) bug();
    if (!(labels(compressed.data(), compressed.size()) == raw_labels)) bug();
  }
  return 0;
}
