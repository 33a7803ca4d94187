// libFuzzer target for the container readers: ZipReader over an in-memory archive, its
// verification, and the .npy header parser on every member (and on the raw input, which reaches
// the parser without needing a valid zip around it). Every header that parses must survive a
// round trip through encode_npy_header.
//
// Any exception other than tth::Error, any sanitizer report, leak, abort or timeout is a bug.
// Build and run (seed it with a few small .npz/.zip/.pt files):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -Iplugin -Iinclude tests/fuzz/zip_reader_fuzz.cpp
//     plugin/container/*.cpp plugin/error.cpp -lz -o zip_reader_fuzz
//   ./zip_reader_fuzz -max_total_time=60 -max_len=4096 corpus/ seeds/
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <vector>

#include "container/npy.h"
#include "container/zip_reader.h"
#include "tth/error.h"

namespace {

using tth::container::NpyHeader;

// Members larger than this are only verified, not buffered: keeps each input fast and small.
constexpr uint64_t kMaxBufferedMember = uint64_t{1} << 20;

void check_round_trip(const NpyHeader& header) {
  std::vector<int64_t> shape;
  for (uint64_t dim : header.shape) {
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return;
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
    std::abort();
  }
}

void parse_npy(const uint8_t* data, std::size_t size) {
  std::optional<NpyHeader> header;
  try {
    header = tth::container::parse_npy_header(data, size, "fuzz");
  } catch (const tth::Error&) {
    return;
  }
  check_round_trip(*header);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  parse_npy(data, size);
  std::optional<tth::container::ZipReader> reader;
  try {
    reader.emplace(data, size);
    reader->verify();
  } catch (const tth::Error&) {
  }
  if (!reader) return 0;
  for (const tth::container::ZipEntry& entry : reader->entries()) {
    if (reader->find(entry.name) != &entry) std::abort();
    if (entry.uncompressed_size > kMaxBufferedMember) continue;
    std::vector<uint8_t> member;
    try {
      member = reader->read_all(entry);
    } catch (const tth::Error&) {
      continue;
    }
    parse_npy(member.data(), member.size());
  }
  return 0;
}
