// Limits of ZipReader: a member's declared size must be one its data can produce, so that no
// allocation is ever sized beyond what the file can deliver, and verification streams in bounded
// memory whatever a member declares. The files are written by Python's zipfile and zlib (the
// oracles): a deflate bomb (4 GiB of zeros in about 4 MB, near deflate's limit of 1032:1) and
// members whose central directory lies about their size.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "container/endian.h"
#include "container/pickle.h"
#include "container/zip_format.h"
#include "container/zip_reader.h"
#include "test_util.h"
#include "tth/error.h"

namespace tth::container {
namespace {

using namespace std::string_literals;

using test::Bytes;
using test::python;
using test::read_file;
using test::TempDir;
using test::write_file;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kBombSize = uint64_t{4} << 30;
constexpr uint64_t kVerifyMemoryLimit = 64 * kMiB;

// Peak resident memory of this process, reset on demand: writing 5 to /proc/self/clear_refs
// sets the peak (VmHWM) to the current size (Linux >= 4.0).
uint64_t status_bytes(const std::string& key) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.compare(0, key.size(), key) == 0) {
      return std::stoull(line.substr(key.size())) * 1024;  // "VmHWM:   1234 kB"
    }
  }
  ADD_FAILURE() << "no " << key << " in /proc/self/status";
  return 0;
}

// How much the peak resident memory grows while `body` runs.
uint64_t peak_growth(const std::function<void()>& body) {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5" << std::flush;
  EXPECT_TRUE(clear_refs.good()) << "cannot reset the peak through /proc/self/clear_refs";
  const uint64_t before = status_bytes("VmRSS:");
  EXPECT_LE(status_bytes("VmHWM:"), before + kMiB) << "the peak was not reset";
  body();
  const uint64_t peak = status_bytes("VmHWM:");
  return peak > before ? peak - before : 0;
}

// Offset of the central directory entry of `name` in `zip`.
std::size_t central_entry(const Bytes& zip, const std::string& name) {
  for (std::size_t at = 0; at + zip::central::kSize <= zip.size(); ++at) {
    if (load_le32(zip.data() + at) != zip::central::kSignature) continue;
    const std::size_t length = load_le16(zip.data() + at + zip::central::kNameLength);
    const auto* stored = reinterpret_cast<const char*>(zip.data() + at + zip::central::kSize);
    if (at + zip::central::kSize + length <= zip.size() && std::string(stored, length) == name) {
      return at;
    }
  }
  ADD_FAILURE() << "no central entry for '" << name << "'";
  return 0;
}

TEST(ZipLimits, ThePeakMemoryProbeSeesTouchedMemory) {
  // The bound checked below means something only if the probe can see memory being used.
  std::vector<uint8_t> touched;
  const uint64_t growth = peak_growth([&] { touched.assign(128 * kMiB, 1); });
  EXPECT_GE(growth, 120 * kMiB);
  EXPECT_EQ(touched[touched.size() / 2], 1);
}

TEST(ZipLimits, VerifyingA4GiBDeflateBombUsesBoundedMemory) {
  TempDir dir;
  const std::string bomb = dir / "bomb.zip";
  python(test::kAppendZeros, {bomb, "bomb", "", std::to_string(kBombSize)});
  ZipReader reader(bomb);
  ASSERT_EQ(reader.entries().size(), 1u);
  const ZipEntry& entry = reader.entries()[0];
  EXPECT_EQ(entry.uncompressed_size, kBombSize);
  EXPECT_LT(entry.compressed_size, 5 * kMiB);  // zeros compress about 1029 times
  const uint64_t growth = peak_growth([&] { reader.verify(); });
  EXPECT_LT(growth, kVerifyMemoryLimit);
  std::cout << "verify() of " << entry.compressed_size << " bytes declaring " << kBombSize
            << ": peak resident memory grew by " << growth / 1024 << " KiB\n";
}

TEST(ZipLimits, DeclaredSizesTheDataCannotProduceAreRefusedAtIndexTime) {
  TempDir dir;
  const std::string path = dir / "liars.zip";
  python(R"(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('deflated', bytes(1 << 20), zipfile.ZIP_DEFLATED, compresslevel=9)
    z.writestr('stored', b'abc', zipfile.ZIP_STORED)
)",
         {path});
  const Bytes valid = read_file(path);
  ZipReader(valid.data(), valid.size()).verify();
  const std::size_t deflated = central_entry(valid, "deflated");
  const std::size_t stored = central_entry(valid, "stored");
  const uint32_t compressed = load_le32(valid.data() + deflated + zip::central::kCompressedSize);
  ASSERT_LT(uint64_t{compressed} * kMaxDeflateRatio, kBombSize);
  const auto with = [&](std::size_t entry, std::size_t field, uint32_t value, int bytes = 4) {
    Bytes changed = valid;
    if (bytes == 2) {
      store_le16(changed.data() + entry + field, static_cast<uint16_t>(value));
    } else {
      store_le32(changed.data() + entry + field, value);
    }
    return changed;
  };
  const auto most = static_cast<uint32_t>(compressed * kMaxDeflateRatio);
  const std::vector<std::pair<Bytes, std::string>> refused = {
      {with(deflated, zip::central::kUncompressedSize, most + 1),
       "member 'deflated': uncompressed size " + std::to_string(most + 1) + " is impossible for " +
           std::to_string(compressed) + " deflated bytes"},
      {with(deflated, zip::central::kUncompressedSize, 0xFFFFFFF0u),
       "member 'deflated': uncompressed size 4294967280 is impossible"},
      {with(stored, zip::central::kUncompressedSize, 0xFFFFFFF0u),
       "member 'stored': stored member with compressed size 3 != uncompressed size 4294967280"},
      // No bound is known for other methods, so they are refused before any size is used.
      {with(stored, zip::central::kMethod, 12, 2),
       "member 'stored': unsupported compression method 12"},
  };
  for (const auto& [input, message] : refused) {
    const Bytes& bytes = input;  // C++17 lambdas cannot capture structured bindings.
    try {
      ZipReader reader(bytes.data(), bytes.size());
      ADD_FAILURE() << "indexed; expected a refusal with '" << message << "'";
    } catch (const FormatError& error) {
      EXPECT_THAT(error.what(), HasSubstr("<memory>: " + message));
    }
  }
  // The same from a file: the error names it.
  write_file(path, refused[0].first);
  try {
    ZipReader reader(path);
    ADD_FAILURE() << "indexed a member declaring more than deflate can produce";
  } catch (const FormatError& error) {
    EXPECT_THAT(error.what(), HasSubstr("file '" + path + "': member 'deflated'"));
  }
  // At the bound the index accepts the member; its data then falls short of the declared size.
  const Bytes at_bound = with(deflated, zip::central::kUncompressedSize, most);
  ZipReader reader(at_bound.data(), at_bound.size());
  try {
    reader.verify();
    ADD_FAILURE() << "verified a member shorter than declared";
  } catch (const FormatError& error) {
    EXPECT_THAT(error.what(), HasSubstr("member 'deflated': data has 1048576 bytes, the central "
                                        "directory says " +
                                        std::to_string(most)));
  }
}

// ---- the pickle reader: memory bounded by the limits, not by what references multiply ----

// Pickles whose values reference one value millions of times: a few MB that a reader which
// copied per reference would turn into gigabytes.
constexpr uint64_t kPickleMemoryLimit = 600 * kMiB;

std::string repeated(std::size_t count, const std::string& reference) {
  std::string out;
  out.reserve(count * reference.size());
  for (std::size_t i = 0; i < count; ++i) out += reference;
  return out;
}

void expect_refused_within_memory(const std::string& pickle, const std::string& problem) {
  const uint64_t growth = peak_growth([&] {
    try {
      parse_pickle(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), "probe");
      ADD_FAILURE() << "accepted; expected '" << problem << "'";
    } catch (const FormatError& error) {
      EXPECT_THAT(error.what(), HasSubstr(problem));
    }
  });
  EXPECT_LT(growth, kPickleMemoryLimit) << problem;
  std::cout << problem << ": " << pickle.size() / 1024 << " KiB pickle, peak resident memory "
            << "grew by " << growth / kMiB << " MiB\n";
}

TEST(PickleMemory, ItemsInContainersAreBoundedWhileParsing) {
  // [None] * 8M: one value, 8M references to it (BINGET 0, appended in batches).
  // PROTO 2, EMPTY_LIST, MARK, NONE, BINPUT 0, then BINGET 0s, APPENDS, in batches.
  std::string pickle = "\x80\x02](Nq\x00"s + repeated((1 << 18) - 1, "h\x00"s) + "e";
  for (int batch = 1; batch < 32; ++batch) pickle += "(" + repeated(1 << 18, "h\x00"s) + "e";
  pickle += ".";
  expect_refused_within_memory(pickle, "items in containers");
}

TEST(PickleMemory, ReferencesAreCountedBeforeTheyAreListed) {
  // D2 = {"b0": D1, "b1": D1, ...}, D1 = {"a0": D0, "a1": D0, ...}, D0 = {"k": None} (memo 0
  // is D1, memo 1 is D0): n items each, by reference, so n * n paths from a few MB (distinct keys:
  // no duplicate stops it).
  constexpr int kN = 1 << 20;
  constexpr int kBatch = 1 << 16;
  const auto str = [](const std::string& text) {
    return "X"s + static_cast<char>(text.size()) + std::string(3, '\0') + text;  // BINUNICODE
  };
  // The pairs `<letter><i>`: memo `index` for i in [first, kN), in SETITEMS batches; the first
  // batch's MARK is already open.
  const auto pairs = [&](char letter, char index, int first) {
    std::string out;
    for (int i = first; i < kN; ++i) {
      if (i % kBatch == 0 && i > first) out += "(";
      out += str(letter + std::to_string(i)) + "h" + index;
      if (i % kBatch == kBatch - 1) out += "u";
    }
    return out;
  };
  std::string pickle = "\x80\x02}("s + str("b0") + "}q\x00("s + str("a0") + "}q\x01"s + str("k") +
                       "Ns" + pairs('a', '\x01', 1) + pairs('b', '\0', 1) + ".";
  expect_refused_within_memory(pickle, "values reached from the root (repeated references)");
}

}  // namespace
}  // namespace tth::container
