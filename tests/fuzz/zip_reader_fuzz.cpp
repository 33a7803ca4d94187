// libFuzzer target for the container readers: ZipReader over an in-memory archive, its
// verification, and NpyMemberReader (with parse_npy_header and the text codec behind it) on
// every member, and on the raw input, which reaches the decoder without needing a valid zip
// around it. Properties checked beyond "no crash":
//   - the raw input decodes the same whether fed whole or in chunks whose sizes the input
//     chooses (so a header split anywhere is handled like a whole one);
//   - every header that parses survives a round trip through encode_npy_header;
//   - every text that decodes survives a round trip through encode_npy_text;
//   - the decoder asks for memory only when the header's sizes add up to the member's.
// The allocation callback refuses arrays over kMaxArrayBytes, as a caller's own limit would.
//
// Any exception other than tth::Error, any sanitizer report, leak, abort or timeout is a bug.
// Build and run (seed it with a few small .npz/.zip/.pt files); the container's sources are
// listed once, in CMake's TTH_CONTAINER_SOURCES, which the build writes to
// build/tests/fuzz/container_sources.txt:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -DTTH_HAVE_LIBDEFLATE -Iplugin -Iinclude
//     tests/fuzz/zip_reader_fuzz.cpp $(cat build/tests/fuzz/container_sources.txt)
//     -lz -ldeflate -o zip_reader_fuzz
//   ./zip_reader_fuzz -max_total_time=60 -max_len=4096 corpus/ seeds/
// tests/fuzz/run_fuzz.sh does all of this (ctest -L fuzz).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "container/npy.h"
#include "container/zip_reader.h"
#include "tth/error.h"

namespace {

using tth::container::NpyHeader;
using tth::container::NpyMemberReader;

// Arrays larger than this are refused by the allocation callback: keeps each input fast.
constexpr uint64_t kMaxArrayBytes = uint64_t{1} << 20;
// Chunk sizes for the split feed are 1 .. kMaxChunk, chosen by the input's own bytes.
constexpr std::size_t kMaxChunk = 13;

[[noreturn]] void bug() { std::abort(); }

void check_round_trip(const NpyHeader& header) {
  std::vector<int64_t> shape;
  for (uint64_t dim : header.shape) {
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) bug();  // parser bound
    shape.push_back(static_cast<int64_t>(dim));
  }
  const std::size_t chars =
      header.dtype == tth::container::DType::kUnicode ? header.itemsize / sizeof(char32_t) : 0;
  const std::string text = tth::container::encode_npy_header(header.dtype, shape, chars);
  // Not caught: our own header failing to parse is a bug.
  const NpyHeader again = tth::container::parse_npy_header(
      reinterpret_cast<const uint8_t*>(text.data()), text.size(), "round trip");
  if (again.dtype != header.dtype || again.itemsize != header.itemsize ||
      again.shape != header.shape || again.big_endian || again.fortran_order ||
      again.header_size != text.size()) {
    bug();
  }
}

void check_text_round_trip(const std::string& text) {
  // Decoded texts are valid UTF-8 without trailing NULs: encoding must take them back exactly.
  const std::string member = tth::container::encode_npy_text(text, "round trip");
  NpyMemberReader reader(member.size(), "round trip", [](const NpyHeader&) -> uint8_t* { bug(); });
  reader.feed(reinterpret_cast<const uint8_t*>(member.data()), member.size());
  if (reader.finish() != NpyMemberReader::Result::kText || reader.text() != text) bug();
}

// What decoding one member gave: the error's message, or the result and its bytes.
struct Outcome {
  std::optional<std::string> error;
  NpyMemberReader::Result result = NpyMemberReader::Result::kSkipped;
  std::vector<uint8_t> data;
  std::string text;

  bool operator==(const Outcome& other) const {
    return error == other.error && result == other.result && data == other.data &&
           text == other.text;
  }
};

// Feeds a member of `member_size` bytes to a fresh NpyMemberReader through `feed_all`, which
// gets the reader's feed function; then finishes it and checks the results' invariants.
template <class FeedAll>
Outcome decode(uint64_t member_size, const FeedAll& feed_all) {
  Outcome out;
  int allocations = 0;
  try {
    NpyMemberReader reader(member_size, "fuzz", [&](const NpyHeader& header) {
      if (++allocations != 1) bug();
      if (header.header_size + header.data_size() != member_size) bug();  // checked first
      if (header.data_size() > kMaxArrayBytes) throw tth::Error("fuzz: array over the limit");
      out.data.resize(header.data_size());
      return out.data.data();
    });
    feed_all([&reader](const uint8_t* data, std::size_t size) { reader.feed(data, size); });
    out.result = reader.finish();
    out.text = reader.text();
    switch (out.result) {
      case NpyMemberReader::Result::kArray:
        if (allocations != 1 || out.data.size() != reader.header().data_size()) bug();
        check_round_trip(reader.header());
        break;
      case NpyMemberReader::Result::kText:
        if (allocations != 0) bug();
        check_round_trip(reader.header());
        check_text_round_trip(out.text);
        break;
      case NpyMemberReader::Result::kSkipped:
        if (allocations != 0) bug();
        break;
    }
  } catch (const tth::Error& error) {
    out.error = error.what();
  }
  return out;
}

// The raw input as one .npy member: whole, then in input-chosen chunks; both must agree.
void decode_raw(const uint8_t* data, std::size_t size) {
  const Outcome whole = decode(size, [&](const auto& feed) { feed(data, size); });
  const Outcome split = decode(size, [&](const auto& feed) {
    for (std::size_t offset = 0, i = 0; offset < size; ++i) {
      const std::size_t chunk = 1 + data[i % size] % kMaxChunk;
      const std::size_t take = std::min(chunk, size - offset);
      feed(data + offset, take);
      offset += take;
    }
  });
  if (!(whole == split)) bug();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  decode_raw(data, size);
  std::optional<tth::container::ZipReader> reader;
  try {
    reader.emplace(data, size);
    reader->verify();
  } catch (const tth::Error&) {
  }
  if (!reader) return 0;
  for (const tth::container::ZipEntry& entry : reader->entries()) {
    if (reader->find(entry.name) != &entry) bug();
    // Every member, whatever its declared size: the decoder streams it, and the allocation
    // callback bounds what it keeps.
    decode(entry.uncompressed_size,
           [&](const auto& feed) { reader->read(entry, tth::container::ZipReader::Sink(feed)); });
  }
  return 0;
}
