// Tests of the torch-free container layer (plugin/container): CRC-32, ZipWriter, ZipReader and
// the .npy header codec. The oracles are the real readers and writers: /usr/bin/python3's
// zipfile and numpy 1.24, torch.save, and Info-ZIP's `unzip -t`.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "container/crc32.h"
#include "container/endian.h"
#include "container/npy.h"
#include "container/parallel_deflate.h"
#include "container/zip_format.h"
#include "container/zip_reader.h"
#include "container/zip_writer.h"
#include "posix_file.h"
#include "test_util.h"

namespace tth::container {
namespace {

using ::testing::HasSubstr;
using Bytes = std::vector<uint8_t>;

using test::CommandResult;
using test::python;
using test::read_file;
using test::run_command;
using test::shell_quote;
using test::write_file;

// Expects `body` to throw exactly an `E` whose message contains every one of `needles`.
template <class E>
void expect_throw(const std::function<void()>& body, const std::vector<std::string>& needles) {
  try {
    body();
    ADD_FAILURE() << "no exception; expected one containing '" << needles.front() << "'";
  } catch (const E& error) {
    for (const std::string& needle : needles) EXPECT_THAT(error.what(), HasSubstr(needle));
  }
}

// Offsets of every occurrence of the 4-byte little-endian `signature` in `bytes`.
std::vector<std::size_t> find_signature(const Bytes& bytes, uint32_t signature) {
  std::vector<std::size_t> found;
  for (std::size_t i = 0; i + sizeof(signature) <= bytes.size(); ++i) {
    if (load_le32(bytes.data() + i) == signature) found.push_back(i);
  }
  return found;
}

template <class T>
Bytes as_bytes(const std::vector<T>& values) {
  const auto* p = reinterpret_cast<const uint8_t*>(values.data());
  return Bytes(p, p + values.size() * sizeof(T));
}

// An .npy member: header as numpy writes it, then `data`.
Bytes npy(DType dtype, const std::vector<int64_t>& shape, const Bytes& data,
          std::size_t unicode_chars = 0) {
  const std::string header = encode_npy_header(dtype, shape, unicode_chars);
  Bytes out(header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Owns a temp directory under the system's, removed with its content after each test.
class TempDirTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_ / name; }

  // Creates `file`, lets `body` add members to a ZipWriter on it, then finishes the archive.
  std::string write_zip(const std::string& file, const std::function<void(ZipWriter&)>& body) {
    const std::string target = path(file);
    File out(target, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ZipWriter writer(out);
    body(writer);
    writer.finish();
    EXPECT_EQ(writer.bytes_written(), out.size());
    out.close();
    return target;
  }

  test::TempDir dir_;
};

// Adds one whole member.
void add(ZipWriter& writer, const std::string& name, const Bytes& data,
         Compression method = Compression::kStored, std::optional<uint64_t> size_hint = {},
         int level = ZipWriter::kDefaultLevel) {
  writer.begin_member(name, method, level, size_hint);
  writer.write(data.data(), data.size());
  writer.end_member();
}

void expect_unzip_ok(const std::string& zip) {
  const CommandResult result = run_command("unzip -t " + shell_quote(zip));
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

using ZipWriterTest = TempDirTest;
using ZipReaderTest = TempDirTest;
using NpyTest = TempDirTest;

// ---------------------------------------------------------------------------------------- CRC

TEST(Crc32Test, KnownAnswerAndChaining) {
  const char kCheck[] = "123456789";  // The standard CRC-32 check input.
  EXPECT_EQ(crc32_update(kCrc32Initial, kCheck, sizeof kCheck - 1), 0xCBF43926u);
  EXPECT_EQ(crc32_update(kCrc32Initial, nullptr, 0), 0u);

  Bytes data(3 << 20);
  std::mt19937 rng(7);
  for (auto& byte : data) byte = static_cast<uint8_t>(rng());
  const uint32_t whole = crc32_update(kCrc32Initial, data.data(), data.size());
  uint32_t chained = kCrc32Initial;
  for (std::size_t at = 0, step = 1; at < data.size(); at += step, step = step * 3 + 1) {
    chained = crc32_update(chained, data.data() + at, std::min(step, data.size() - at));
  }
  EXPECT_EQ(chained, whole);
}

// ------------------------------------------------------------------------------------ writer

TEST_F(ZipWriterTest, StoredNpyMembersLoadInNumpyAndUnzip) {
  std::vector<int64_t> a(12);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int64_t>(i) - 3;
  const Bytes a_npy = npy(DType::kInt64, {3, 4}, as_bytes(a));
  const Bytes b_npy = npy(DType::kFloat32, {3}, as_bytes(std::vector<float>{0.5f, -1.25f, 3.0f}));
  const Bytes c_npy = npy(DType::kFloat64, {}, as_bytes(std::vector<double>{2.5}));
  const Bytes s_npy = npy(DType::kUnicode, {}, as_bytes(std::vector<char32_t>{U'h', U'\u00e9'}), 2);
  const std::string zip = write_zip("stored.npz", [&](ZipWriter& writer) {
    add(writer, "a.npy", a_npy, Compression::kStored, a_npy.size());       // exact hint: no ZIP64
    add(writer, "b.npy", b_npy);                                           // no hint: ZIP64 extra
    add(writer, "c.npy", c_npy, Compression::kStored, 5);                  // wrong hint, patched
    add(writer, "s.npy", s_npy, Compression::kStored, uint64_t{1} << 32);  // big hint: ZIP64
  });
  const std::string output = python(R"PY(
import sys, zipfile, numpy as np
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    assert z.testzip() is None
    assert z.namelist() == ['a.npy', 'b.npy', 'c.npy', 's.npy'], z.namelist()
    for info in z.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.date_time
        assert info.external_attr == 0o600 << 16 and info.create_system == 3
        assert info.compress_type == zipfile.ZIP_STORED and info.flag_bits == 0
    assert [i.extract_version for i in z.infolist()] == [20, 45, 20, 45]
d = np.load(path)
assert d['a'].dtype == np.int64 and (d['a'] == np.arange(12).reshape(3, 4) - 3).all()
assert d['b'].dtype == np.float32 and d['b'].tolist() == [0.5, -1.25, 3.0]
assert d['c'].shape == () and d['c'].dtype == np.float64 and float(d['c']) == 2.5
assert d['s'].dtype == np.dtype('<U2') and str(d['s']) == 'h\u00e9'
print('numpy ok')
)PY",
                                    {zip});
  EXPECT_THAT(output, HasSubstr("numpy ok"));
  expect_unzip_ok(zip);

  ZipReader reader(zip);
  ASSERT_EQ(reader.entries().size(), 4u);
  reader.verify();
  EXPECT_EQ(reader.read_all(*reader.find("c.npy")), c_npy);
}

TEST_F(ZipWriterTest, DeflateMembersLoadInNumpyAndUnzip) {
  std::vector<float> ramp(750000);  // 3 MB: several buffer flushes.
  for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i) * 0.5f;
  const Bytes ramp_npy = npy(DType::kFloat32, {static_cast<int64_t>(ramp.size())}, as_bytes(ramp));
  const Bytes zeros_npy = npy(DType::kUInt8, {5 << 20}, Bytes(5 << 20, 0));
  const std::string zip = write_zip("deflate.npz", [&](ZipWriter& writer) {
    writer.begin_member("ramp.npy", Compression::kDeflate, 1, std::nullopt);
    // Odd pieces, one larger than the writer's buffer, then the rest.
    std::size_t at = 0;
    for (std::size_t piece : {std::size_t{1}, std::size_t{999}, std::size_t{(1 << 20) + 7}}) {
      writer.write(ramp_npy.data() + at, piece);
      at += piece;
    }
    writer.write(ramp_npy.data() + at, ramp_npy.size() - at);
    writer.end_member();
    add(writer, "zeros.npy", zeros_npy, Compression::kDeflate, std::nullopt, 9);
    add(writer, "default.npy", ramp_npy, Compression::kDeflate);
  });
  const std::string output = python(R"PY(
import sys, zipfile, numpy as np
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    assert z.testzip() is None
    for info in z.infolist():
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.extract_version == 45
    assert z.getinfo('zeros.npy').compress_size < z.getinfo('zeros.npy').file_size // 100
d = np.load(path)
expected = np.arange(750000, dtype=np.float32) * np.float32(0.5)
assert d['ramp'].dtype == np.float32 and (d['ramp'] == expected).all()
assert (d['default'] == expected).all()
assert d['zeros'].shape == (5 << 20,) and not d['zeros'].any()
print('numpy ok')
)PY",
                                    {zip});
  EXPECT_THAT(output, HasSubstr("numpy ok"));
  expect_unzip_ok(zip);
  ZipReader reader(zip);
  reader.verify();
  EXPECT_EQ(reader.read_all(*reader.find("ramp.npy")), ramp_npy);
}

TEST_F(ZipWriterTest, NonAsciiNameSetsUtf8Flag) {
  const std::string name = "gewicht_\xc3\xa4/\xc3\x9f.npy";  // "gewicht_ä/ß.npy" in UTF-8
  const std::string zip = write_zip("utf8.zip", [&](ZipWriter& writer) {
    add(writer, name, Bytes{1, 2, 3});
    add(writer, "plain.npy", Bytes{4});
  });
  const std::string output = python(R"PY(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    info = z.getinfo('gewicht_\u00e4/\u00df.npy')
    assert info.flag_bits & 0x800 and z.read(info) == b'\x01\x02\x03'
    assert z.getinfo('plain.npy').flag_bits & 0x800 == 0
print('zipfile ok')
)PY",
                                    {zip});
  EXPECT_THAT(output, HasSubstr("zipfile ok"));
  expect_unzip_ok(zip);
  ZipReader reader(zip);
  ASSERT_NE(reader.find(name), nullptr);
  EXPECT_EQ(reader.find(name)->flags & zip::kFlagUtf8, zip::kFlagUtf8);
  EXPECT_EQ(reader.find("plain.npy")->flags, 0);
}

TEST_F(ZipWriterTest, EmptyMembers) {
  const std::string zip = write_zip("empty.zip", [](ZipWriter& writer) {
    add(writer, "hinted", {}, Compression::kStored, 0);
    add(writer, "unhinted", {});
    add(writer, "deflated", {}, Compression::kDeflate);
  });
  const std::string output = python(R"PY(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    assert [(i.filename, i.file_size) for i in z.infolist()] == [
        ('hinted', 0), ('unhinted', 0), ('deflated', 0)]
    assert all(z.read(n) == b'' for n in z.namelist())
print('zipfile ok')
)PY",
                                    {zip});
  EXPECT_THAT(output, HasSubstr("zipfile ok"));
  expect_unzip_ok(zip);
  ZipReader reader(zip);
  reader.verify();
  EXPECT_TRUE(reader.read_all(reader.entries()[2]).empty());
}

TEST_F(ZipWriterTest, EmptyArchive) {
  const std::string zip = write_zip("none.zip", [](ZipWriter&) {});
  EXPECT_EQ(read_file(zip).size(), zip::end::kSize);
  EXPECT_EQ(python("import sys, numpy as np; print(len(np.load(sys.argv[1]).files))", {zip}),
            "0\n");
  EXPECT_TRUE(ZipReader(zip).entries().empty());
}

TEST_F(ZipWriterTest, MoreThan65535MembersUseZip64EndRecord) {
  constexpr int kMembers = 70000;
  const std::string zip = write_zip("many.zip", [&](ZipWriter& writer) {
    for (int i = 0; i < kMembers; ++i) {
      const Bytes data{static_cast<uint8_t>(i), static_cast<uint8_t>(i >> 8)};
      add(writer, "m" + std::to_string(i), data, Compression::kStored, data.size());
    }
  });
  const Bytes bytes = read_file(zip);
  EXPECT_EQ(find_signature(bytes, zip::zip64_end::kSignature).size(), 1u);
  const std::string output = python(R"PY(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    names = z.namelist()
    assert len(names) == 70000 and names[-1] == 'm69999'
    assert z.read('m69999') == bytes([69999 & 255, (69999 >> 8) & 255])
print('zipfile ok')
)PY",
                                    {zip});
  EXPECT_THAT(output, HasSubstr("zipfile ok"));
  ZipReader reader(zip);
  ASSERT_EQ(reader.entries().size(), static_cast<std::size_t>(kMembers));
  EXPECT_EQ(reader.read_all(*reader.find("m65536")), (Bytes{0, 0}));
}

// Writes 4 GiB: run with --gtest_also_run_disabled_tests (4 GiB of disk, 30 s under ASan).
TEST_F(ZipWriterTest, DISABLED_Over4GiBUsesZip64Extras) {
  const Bytes block(1 << 20, 0x5A);
  const uint64_t big_size = (uint64_t{4} << 30) + 3;
  const std::string zip = write_zip("big.zip", [&](ZipWriter& writer) {
    writer.begin_member("big");  // No size hint: sizes go to the local ZIP64 extra.
    for (uint64_t done = 0; done < big_size;) {
      const auto size = static_cast<std::size_t>(std::min<uint64_t>(block.size(), big_size - done));
      writer.write(block.data(), size);
      done += size;
    }
    writer.end_member();
    add(writer, "tail", Bytes{1, 2, 3}, Compression::kStored, 3);  // Offset needs ZIP64.
  });
  const std::string output = python(R"PY(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    big, tail = z.infolist()
    assert big.file_size == big.compress_size == (4 << 30) + 3
    assert tail.header_offset > 1 << 32 and z.read('tail') == b'\x01\x02\x03'
    assert (big.extract_version, tail.extract_version) == (45, 45)
print('zipfile ok')
)PY",
                                    {zip});
  EXPECT_THAT(output, HasSubstr("zipfile ok"));
  expect_unzip_ok(zip);
  ZipReader reader(zip);
  reader.verify();
  EXPECT_EQ(reader.find("big")->uncompressed_size, big_size);
  EXPECT_EQ(reader.read_all(*reader.find("tail")), (Bytes{1, 2, 3}));
}

TEST_F(ZipWriterTest, DuplicateNameThrowsNamingIt) {
  expect_throw<Error>(
      [&] {
        write_zip("dup.zip", [](ZipWriter& writer) {
          add(writer, "w.npy", {1});
          add(writer, "w.npy", {2});
        });
      },
      {"duplicate", "'w.npy'"});
}

TEST_F(ZipWriterTest, MisuseThrows) {
  const std::string target = path("misuse.zip");
  File out(target, O_CREAT | O_WRONLY, 0600);
  ZipWriter writer(out);
  expect_throw<Error>([&] { writer.write("x", 1); }, {"write()", "outside a member"});
  expect_throw<Error>([&] { writer.end_member(); }, {"end_member()"});
  expect_throw<Error>([&] { writer.begin_member(""); }, {"name must be"});
  expect_throw<Error>([&] { writer.begin_member("a", Compression::kDeflate, 10); },
                      {"deflate level", "10"});
  writer.begin_member("a");
  expect_throw<Error>([&] { writer.finish(); }, {"finish()", "inside a member"});
  writer.end_member();
  writer.finish();
  expect_throw<Error>([&] { writer.begin_member("b"); }, {"after finish()"});
}

TEST_F(ZipWriterTest, WriteErrorIsIOErrorWithPath) {
  const std::string target = path("readonly.zip");
  write_file(target, {});
  File in(target, O_RDONLY);
  ZipWriter writer(in);
  add(writer, "a", Bytes(100, 1));
  expect_throw<IOError>([&] { writer.finish(); }, {"write", target});
}

// ------------------------------------------------------------------------------------ reader

TEST_F(ZipReaderTest, ReadsNumpySavez) {
  const std::string zip = path("savez.npz");
  python(R"PY(
import sys, numpy as np
np.savez(sys.argv[1], a=np.arange(10, dtype=np.int64), b=np.array([[1.5, 2], [3, 4]], np.float32))
)PY",
         {zip});
  ZipReader reader(zip);
  ASSERT_EQ(reader.entries().size(), 2u);
  reader.verify();
  const ZipEntry* a = reader.find("a.npy");
  ASSERT_NE(a, nullptr);
  // numpy writes a ZIP64 extra in each local header: data starts after the LOCAL extra.
  EXPECT_GT(a->data_offset, a->local_header_offset + zip::local::kSize + a->name.size());
  const Bytes bytes = reader.read_all(*a);
  const NpyHeader header = parse_npy_header(bytes.data(), bytes.size(), "a.npy");
  EXPECT_EQ(header.dtype, DType::kInt64);
  EXPECT_EQ(header.shape, std::vector<uint64_t>{10});
  ASSERT_EQ(header.header_size + header.data_size(), bytes.size());
  std::vector<int64_t> values(10);
  std::memcpy(values.data(), bytes.data() + header.header_size, header.data_size());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(values[i], i);
  EXPECT_EQ(reader.find("c.npy"), nullptr);
}

TEST_F(ZipReaderTest, ReadsNumpySavezCompressed) {
  const std::string zip = path("compressed.npz");
  python(
      "import sys, numpy as np; np.savez_compressed(sys.argv[1], "
      "w=np.arange(300000, dtype=np.float64) % 7, b=np.ones(3, np.float32))",
      {zip});
  ZipReader reader(zip);
  reader.verify();
  const ZipEntry* w = reader.find("w.npy");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->method, static_cast<uint16_t>(Compression::kDeflate));
  EXPECT_LT(w->compressed_size, w->uncompressed_size);
  const Bytes bytes = reader.read_all(*w);
  const NpyHeader header = parse_npy_header(bytes.data(), bytes.size(), "w.npy");
  ASSERT_EQ(header.header_size + header.data_size(), bytes.size());
  std::vector<double> values(header.element_count());
  std::memcpy(values.data(), bytes.data() + header.header_size, header.data_size());
  for (std::size_t i = 0; i < values.size(); i += 9973) EXPECT_EQ(values[i], double(i % 7));
}

TEST_F(ZipReaderTest, ReadsTorchSaveArchive) {
  const std::string zip = path("model.pt");
  python("import sys, torch; torch.save({'a': torch.arange(10)}, sys.argv[1])", {zip});
  ZipReader reader(zip);
  reader.verify();
  const ZipEntry* storage = nullptr;
  bool has_pickle = false;
  for (const ZipEntry& entry : reader.entries()) {
    const std::string& n = entry.name;
    has_pickle |= n.size() >= 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0;
    if (n.size() >= 7 && n.compare(n.size() - 7, 7, "/data/0") == 0) storage = &entry;
  }
  EXPECT_TRUE(has_pickle);
  ASSERT_NE(storage, nullptr);
  // PyTorch pads local extras so that tensor data is 64-byte aligned.
  EXPECT_EQ(storage->data_offset % 64, 0u);
  const Bytes bytes = reader.read_all(*storage);
  ASSERT_EQ(bytes.size(), 10 * sizeof(int64_t));
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(load_le64(bytes.data() + i * sizeof(int64_t)), uint64_t(i));
}

// zlib may have consumed the last input byte while the last match still has output to give
// (here when the output chunk ends within the final 258 bytes): that is not truncation.
TEST_F(ZipReaderTest, ReadsDeflateWhoseLastMatchSpansOutputChunks) {
  const std::string zip = write_zip("boundary.zip", [](ZipWriter& writer) {
    for (std::size_t tail : {1, 50, 100}) {
      add(writer, "zeros" + std::to_string(tail), Bytes((std::size_t{2} << 20) + tail, 0),
          Compression::kDeflate, std::nullopt, ZipWriter::kMaxLevel);
    }
  });
  EXPECT_THAT(python("import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).testzip())", {zip}),
              HasSubstr("None"));
  ZipReader reader(zip);
  reader.verify();
  EXPECT_EQ(reader.read_all(*reader.find("zeros1")).size(), (std::size_t{2} << 20) + 1);
}

TEST_F(ZipReaderTest, AcceptsDataDescriptors) {
  const std::string zip = path("descriptors.zip");
  // Python's zipfile uses data descriptors when the output cannot seek.
  python(R"PY(
import io, sys, zipfile
class Unseekable(io.RawIOBase):
    def __init__(self, f): self.f = f
    def writable(self): return True
    def write(self, b): return self.f.write(b)
with open(sys.argv[1], 'wb') as f:
    with zipfile.ZipFile(Unseekable(f), 'w') as z:
        z.writestr('stored', b'abc' * 1000, compress_type=zipfile.ZIP_STORED)
        z.writestr('deflated', b'xyz' * 100000, compress_type=zipfile.ZIP_DEFLATED)
)PY",
         {zip});
  ZipReader reader(zip);
  ASSERT_EQ(reader.entries().size(), 2u);
  for (const ZipEntry& entry : reader.entries()) {
    EXPECT_NE(entry.flags & zip::kFlagDataDescriptor, 0) << entry.name;
  }
  reader.verify();
  const Bytes deflated = reader.read_all(*reader.find("deflated"));
  ASSERT_EQ(deflated.size(), 300000u);
  EXPECT_EQ(std::string(deflated.begin(), deflated.begin() + 6), "xyzxyz");
}

TEST_F(ZipReaderTest, FlippedDataByteFailsCrc) {
  Bytes payload(5000);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  const std::string zip = write_zip("flip.zip", [&](ZipWriter& writer) {
    add(writer, "stored.npy", payload);
    add(writer, "deflated.npy", payload, Compression::kDeflate);
  });
  const Bytes original = read_file(zip);
  for (const std::string name : {"stored.npy", "deflated.npy"}) {
    const ZipEntry entry = *ZipReader(zip).find(name);
    Bytes corrupt = original;
    corrupt[entry.data_offset + entry.compressed_size / 2] ^= 0x10;
    write_file(zip, corrupt);
    ZipReader reader(zip);  // The index does not read member data...
    reader.read(*reader.find(name == "stored.npy" ? "deflated.npy" : "stored.npy"), nullptr);
    // ...but reading the member does.
    expect_throw<FormatError>([&] { reader.verify(); }, {"file '" + zip + "'", name});
    expect_throw<FormatError>([&] { reader.read_all(*reader.find(name)); }, {name});
    ZipReader in_memory(corrupt.data(), corrupt.size());
    expect_throw<FormatError>([&] { in_memory.verify(); }, {"<memory>", name});
  }
  // A stored member always reaches the CRC check, with the exact message.
  Bytes corrupt = original;
  const ZipEntry stored = *ZipReader(original.data(), original.size()).find("stored.npy");
  corrupt[stored.data_offset] ^= 1;
  ZipReader reader(corrupt.data(), corrupt.size());
  expect_throw<FormatError>(
      [&] { reader.read(stored, nullptr); },
      {"<memory>: member 'stored.npy': CRC-32 mismatch (stored 0x", ", computed 0x"});
}

TEST_F(ZipReaderTest, TruncatedArchivesThrowFormatError) {
  const std::string zip = path("truncate.npz");
  python("import sys, numpy as np; np.savez(sys.argv[1], a=np.arange(5), b=np.ones((2, 2)))",
         {zip});
  const Bytes bytes = read_file(zip);
  ASSERT_GT(bytes.size(), 500u);
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    try {
      ZipReader reader(bytes.data(), size);
      reader.verify();
      ADD_FAILURE() << "a prefix of " << size << " bytes was accepted";
    } catch (const FormatError& error) {
      EXPECT_THAT(error.what(), HasSubstr("<memory>"));
    }
  }
  const Bytes prefix(bytes.begin(), bytes.end() - 1);
  write_file(zip, prefix);
  expect_throw<FormatError>([&] { ZipReader reader(zip); }, {"file '" + zip + "'"});
}

TEST_F(ZipReaderTest, GarbageThrowsFormatError) {
  std::mt19937 rng(42);
  Bytes noise(100000);
  for (auto& byte : noise) byte = static_cast<uint8_t>(rng());
  // A bare end record claiming 0xFFFE entries in a 100-byte directory.
  Bytes liar(100, 0);
  LeAppender(liar)
      .u32(zip::end::kSignature)
      .u16(0)
      .u16(0)
      .u16(0xFFFE)
      .u16(0xFFFE)
      .u32(100)
      .u32(0)
      .u16(0);
  // A ZIP64 locator pointing past the file.
  Bytes bad_locator;
  LeAppender(bad_locator)
      .u32(zip::zip64_locator::kSignature)
      .u32(0)
      .u64(uint64_t{1} << 62)
      .u32(1)
      .u32(zip::end::kSignature)
      .u16(0)
      .u16(0)
      .u16(0xFFFF)
      .u16(0xFFFF)
      .u32(~0u)
      .u32(~0u)
      .u16(0);
  // An end record whose comment length runs past the end.
  Bytes long_comment;
  LeAppender(long_comment).u32(zip::end::kSignature).u64(0).u64(0).u16(5);
  const std::vector<std::pair<Bytes, std::string>> cases = {
      {{}, "too short"},
      {Bytes(21, 0), "too short"},
      {Bytes(5000, 0), "no end of central directory"},
      {noise, "no end of central directory"},
      {liar, "claims 65534 entries"},
      {bad_locator, "ZIP64 end record offset"},
      {long_comment, "no end of central directory"},
  };
  for (const auto& [input, message] : cases) {
    const Bytes& bytes = input;  // C++17 lambdas cannot capture structured bindings.
    expect_throw<FormatError>([&] { ZipReader(bytes.data(), bytes.size()).verify(); },
                              {"<memory>", message});
  }
  expect_throw<IOError>([&] { ZipReader reader(path("missing.zip")); }, {"open", "missing.zip"});
}

TEST_F(ZipReaderTest, RejectsInconsistentDirectories) {
  // Members "x" (whose data embeds a complete local header and data for "y") and "y".
  Bytes embedded;
  LeAppender(embedded)
      .u32(zip::local::kSignature)
      .u16(zip::kVersionDefault)
      .u16(0)
      .u16(0)
      .u16(zip::kDosTime)
      .u16(zip::kDosDate)
      .u32(crc32_update(0, "hi", 2))
      .u32(2)
      .u32(2)
      .u16(1)
      .u16(0)
      .bytes("y", 1)
      .bytes("hi", 2);
  const Bytes valid = read_file(write_zip("two.zip", [&](ZipWriter& writer) {
    add(writer, "x", embedded, Compression::kStored, embedded.size());
    add(writer, "y", Bytes{'h', 'i'}, Compression::kStored, 2);
  }));
  const std::vector<std::size_t> central = find_signature(valid, zip::central::kSignature);
  ASSERT_EQ(central.size(), 2u);
  ZipReader(valid.data(), valid.size()).verify();
  const std::size_t y_central = central[1];
  const auto local_offset = [&](std::size_t entry) {
    return load_le32(valid.data() + entry + zip::central::kLocalHeaderOffset);
  };

  Bytes overlapping = valid;  // "y" points at the local header embedded in "x"'s data.
  store_le32(overlapping.data() + y_central + zip::central::kLocalHeaderOffset,
             local_offset(central[0]) + zip::local::kSize + 1);
  Bytes renamed = valid;  // The local name of "y" differs from its central name.
  renamed[local_offset(y_central) + zip::local::kSize] = 'z';
  Bytes duplicate = valid;  // Both members named "x".
  duplicate[y_central + zip::central::kSize] = 'x';
  duplicate[local_offset(y_central) + zip::local::kSize] = 'x';
  Bytes sizes = valid;  // Stored member whose sizes disagree.
  store_le32(sizes.data() + y_central + zip::central::kUncompressedSize, 3);
  Bytes past_end = valid;  // Data running into the central directory.
  store_le32(past_end.data() + y_central + zip::central::kCompressedSize, 1000);
  store_le32(past_end.data() + y_central + zip::central::kUncompressedSize, 1000);
  Bytes bad_offset = valid;
  store_le32(bad_offset.data() + y_central + zip::central::kLocalHeaderOffset, 0xFFFFFFF0u);
  Bytes method = valid;
  store_le16(method.data() + y_central + zip::central::kMethod, 12);  // bzip2

  const std::vector<std::pair<const Bytes*, std::string>> cases = {
      {&overlapping, "member 'x': overlaps"},
      {&renamed, "member 'y': local header name 'z' does not match"},
      {&duplicate, "member 'x': duplicate member name"},
      {&sizes, "member 'y': stored member with compressed size 2 != uncompressed size 3"},
      {&past_end, "member 'y': data ["},
      {&bad_offset, "member 'y': local header offset 4294967280 is out of range"},
      {&method, "member 'y': unsupported compression method 12"},
  };
  for (const auto& [input, message] : cases) {
    const Bytes* bytes = input;  // C++17 lambdas cannot capture structured bindings.
    expect_throw<FormatError>([&] { ZipReader(bytes->data(), bytes->size()).verify(); },
                              {"<memory>: " + message});
  }
}

// ---------------------------------------------------------------------------------------- npy

struct HeaderCase {
  DType dtype;
  const char* numpy_dtype;  // As np.dtype() spells it.
  std::vector<int64_t> shape;
  std::size_t unicode_chars = 0;
};

std::string python_tuple(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (int64_t dim : shape) text += std::to_string(dim) + ",";
  return text + ")";
}

TEST_F(NpyTest, EncodeMatchesNumpyBytes) {
  std::vector<HeaderCase> cases = {
      {DType::kBool, "bool", {}},
      {DType::kInt8, "int8", {3}},
      {DType::kUInt8, "uint8", {2, 3}},
      {DType::kInt16, "int16", {0}},
      {DType::kInt32, "int32", {1, 2, 3, 4}},
      {DType::kInt64, "int64", {10}},
      {DType::kFloat16, "float16", {7}},
      {DType::kFloat32, "float32", {2, 3}},
      {DType::kFloat64, "float64", {}},
      {DType::kComplex64, "complex64", {5}},
      {DType::kComplex128, "complex128", {1}},
      {DType::kUnicode, "<U5", {}, 5},
      {DType::kUnicode, "<U1", {4}, 1},
  };
  // Every header length modulo 64 (including "already aligned"), and long dimensions.
  for (int extra = 0; extra < 64; ++extra) {
    std::vector<int64_t> shape(1 + extra, 1);
    shape[0] = 2;
    cases.push_back({DType::kFloat32, "float32", shape});
  }
  int64_t dim = 1;
  for (int digits = 1; digits <= 19; ++digits) {  // Up to 10^18, the largest that fits.
    cases.push_back({DType::kFloat64, "float64", {2, dim}});
    cases.push_back({DType::kInt8, "int8", {dim, 3}});
    if (digits < 19) dim *= 10;
  }
  cases.push_back({DType::kUInt8, "uint8", std::vector<int64_t>(22000, 1)});  // Version 2.0.

  std::string script =
      "import io, warnings, numpy as np, numpy.lib.format as f\n"
      "warnings.simplefilter('ignore')\n"
      "for dtype, shape in [\n";
  for (const HeaderCase& c : cases) {
    script += "  ('" + std::string(c.numpy_dtype) + "', " + python_tuple(c.shape) + "),\n";
  }
  script +=
      "]:\n"
      "  b = io.BytesIO()\n"
      "  f._write_array_header(b, {'descr': f.dtype_to_descr(np.dtype(dtype)),\n"
      "                            'fortran_order': False, 'shape': shape})\n"
      "  print(b.getvalue().hex())\n";
  std::istringstream numpy_headers(python(script));
  for (const HeaderCase& c : cases) {
    std::string expected_hex;
    ASSERT_TRUE(std::getline(numpy_headers, expected_hex));
    const std::string header = encode_npy_header(c.dtype, c.shape, c.unicode_chars);
    std::string hex;
    for (unsigned char byte : header) {
      static const char kDigits[] = "0123456789abcdef";
      hex += kDigits[byte >> 4];
      hex += kDigits[byte & 15];
    }
    EXPECT_EQ(hex, expected_hex) << c.numpy_dtype << " " << python_tuple(c.shape);
    EXPECT_EQ(header.size() % 64, 0u);
    if (c.shape.size() <= 64) {
      const auto* data = reinterpret_cast<const uint8_t*>(header.data());
      const NpyHeader parsed = parse_npy_header(data, header.size(), "round trip");
      EXPECT_EQ(parsed.dtype, c.dtype);
      EXPECT_EQ(parsed.itemsize, dtype_itemsize(c.dtype, c.unicode_chars));
      EXPECT_EQ(parsed.shape, std::vector<uint64_t>(c.shape.begin(), c.shape.end()));
      EXPECT_EQ(parsed.header_size, header.size());
    }
  }
}

TEST_F(NpyTest, ParsesNumpySavezHeadersOfEveryDType) {
  const std::string zip = path("dtypes.npz");
  python(R"PY(
import sys, numpy as np
np.savez(sys.argv[1], b=np.array([True, False]), i1=np.int8([1]), u1=np.uint8([1]),
         i2=np.int16([1]), i4=np.int32([1]), i8=np.int64([1]), f2=np.float16([1]),
         f4=np.float32([1]), f8=np.float64([1, 2, 3]), c8=np.complex64([1]),
         c16=np.complex128([1]), s=np.array('text'), big=np.arange(6, dtype='>f8').reshape(2, 3),
         fortran=np.asfortranarray(np.ones((2, 3), np.float32)),
         none=np.array(None), objects=np.array([None, 1], dtype=object))
)PY",
         {zip});
  struct Expected {
    DType dtype;
    std::size_t itemsize;
    std::vector<uint64_t> shape;
    bool big_endian = false;
    bool fortran_order = false;
  };
  const std::vector<std::pair<std::string, Expected>> expected = {
      {"b", {DType::kBool, 1, {2}}},
      {"i1", {DType::kInt8, 1, {1}}},
      {"u1", {DType::kUInt8, 1, {1}}},
      {"i2", {DType::kInt16, 2, {1}}},
      {"i4", {DType::kInt32, 4, {1}}},
      {"i8", {DType::kInt64, 8, {1}}},
      {"f2", {DType::kFloat16, 2, {1}}},
      {"f4", {DType::kFloat32, 4, {1}}},
      {"f8", {DType::kFloat64, 8, {3}}},
      {"c8", {DType::kComplex64, 8, {1}}},
      {"c16", {DType::kComplex128, 16, {1}}},
      {"s", {DType::kUnicode, 16, {}}},
      {"big", {DType::kFloat64, 8, {2, 3}, true}},
      {"fortran", {DType::kFloat32, 4, {2, 3}, false, true}},
  };
  ZipReader reader(zip);
  for (const auto& [key, want] : expected) {
    SCOPED_TRACE(key);
    const ZipEntry* entry = reader.find(key + ".npy");
    ASSERT_NE(entry, nullptr);
    const Bytes bytes = reader.read_all(*entry);
    const NpyHeader header = parse_npy_header(bytes.data(), bytes.size(), key);
    EXPECT_EQ(header.dtype, want.dtype);
    EXPECT_EQ(header.itemsize, want.itemsize);
    EXPECT_EQ(header.shape, want.shape);
    EXPECT_EQ(header.big_endian, want.big_endian);
    EXPECT_EQ(header.fortran_order, want.fortran_order);
    EXPECT_EQ(header.header_size + header.data_size(), bytes.size());
  }
  for (const auto& [key, shape] :
       std::vector<std::pair<std::string, std::vector<uint64_t>>>{{"none", {}}, {"objects", {2}}}) {
    const Bytes bytes = reader.read_all(*reader.find(key + ".npy"));
    try {
      parse_npy_header(bytes.data(), bytes.size(), "member '" + key + "'");
      ADD_FAILURE() << key << ": object array accepted";
    } catch (const NpyObjectArrayError& error) {
      EXPECT_EQ(error.shape(), shape);
      EXPECT_THAT(error.what(), HasSubstr("member '" + key + "': npy header: object arrays"));
    }
  }
}

// An .npy prefix (version `major`.0) around a raw header `text`.
Bytes raw_npy(uint8_t major, const std::string& text) {
  Bytes out{0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
  if (major == 1) {
    LeAppender(out).u16(static_cast<uint16_t>(text.size()));
  } else {
    LeAppender(out).u32(static_cast<uint32_t>(text.size()));
  }
  LeAppender(out).bytes(text.data(), text.size());
  return out;
}

TEST_F(NpyTest, ParseToleratesFormattingVariants) {
  struct Case {
    Bytes bytes;
    DType dtype;
    std::size_t itemsize;
    std::vector<uint64_t> shape;
    bool big_endian;
    bool fortran_order;
  };
  const std::vector<Case> cases = {
      {raw_npy(1, R"({"shape": (3L, 4L), "fortran_order": True, "descr": "<i8"})"),
       DType::kInt64,
       8,
       {3, 4},
       false,
       true},
      {raw_npy(1, "{ 'descr' : '>f4' ,\t'fortran_order' : False , 'shape' : ( 5 , ) }\n  \n"),
       DType::kFloat32,
       4,
       {5},
       true,
       false},
      {raw_npy(2, "{'descr': '=i4', 'fortran_order': False, 'shape': ()}"),
       DType::kInt32,
       4,
       {},
       false,
       false},
      {raw_npy(3, "{'descr': '<U7', 'fortran_order': False, 'shape': (0,), }"),
       DType::kUnicode,
       28,
       {0},
       false,
       false},
      {raw_npy(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 0, 3)}"),
       DType::kBool,
       1,
       {2, 0, 3},
       false,
       false},
  };
  for (const Case& c : cases) {
    const NpyHeader header = parse_npy_header(c.bytes.data(), c.bytes.size(), "ctx");
    EXPECT_EQ(header.dtype, c.dtype);
    EXPECT_EQ(header.itemsize, c.itemsize);
    EXPECT_EQ(header.shape, c.shape);
    EXPECT_EQ(header.big_endian, c.big_endian);
    EXPECT_EQ(header.fortran_order, c.fortran_order);
    EXPECT_EQ(header.header_size, c.bytes.size());
  }
  const Bytes zero_d = raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': ()}");
  EXPECT_EQ(parse_npy_header(zero_d.data(), zero_d.size(), "ctx").element_count(), 1u);
}

TEST_F(NpyTest, ParseRejectsMalformedHeaders) {
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}";
  Bytes bad_magic = raw_npy(1, ok_dict);
  bad_magic[1] = 'X';
  Bytes cut = raw_npy(1, ok_dict);
  cut.pop_back();
  std::string many_dims;
  for (int i = 0; i < 65; ++i) many_dims += "1,";
  Bytes huge_length{0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0};
  LeAppender(huge_length).u32(0xFFFFFFF0u);
  const std::vector<std::pair<Bytes, std::string>> cases = {
      {{}, "bad magic"},
      {bad_magic, "bad magic"},
      {raw_npy(4, ok_dict), "unsupported version 4.0"},
      {cut, "truncated"},
      {Bytes{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 10}, "truncated"},
      {huge_length, "too large"},
      {raw_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
       "unexpected or repeated key 'x'"},
      {raw_npy(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}"),
       "repeated key 'descr'"},
      {raw_npy(1, "{'descr': '<f4', 'shape': (2,)}"), "needs the keys"},
      // numpy refuses NUL bytes in a header: neither space nor a byte-order mark.
      {raw_npy(1, std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}\0", 56)),
       "unexpected text after the dictionary"},
      {raw_npy(1, std::string("{'descr': '\0f4', 'fortran_order': False, 'shape': (2,)}", 55)),
       "unsupported descr"},
      {raw_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}"), "must be a tuple"},
      {raw_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}"),
       "non-negative dimension"},
      {raw_npy(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}"), "True or False"},
      {raw_npy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2,)}"),
       "unsupported descr '<u2'"},
      {raw_npy(1, "{'descr': '<f3', 'fortran_order': False, 'shape': (2,)}"),
       "unsupported descr '<f3'"},
      {raw_npy(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}"),
       "structured dtypes"},
      {raw_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}"),
       "element count overflows"},
      {raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,)}"),
       "data size overflows"},
      {raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}"),
       "dimension overflows"},
      {raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (" + many_dims + ")}"),
       "more than 64 dimensions"},
      {raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 9223372036854775808)}"),
       "dimension 9223372036854775808 exceeds numpy's maximum 9223372036854775807"},
      {raw_npy(1, "{'descr: '<f8'}"), "expected ':'"},
      {raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': ()} x"), "after the dict"},
  };
  for (const auto& [input, message] : cases) {
    const Bytes& bytes = input;  // C++17 lambdas cannot capture structured bindings.
    expect_throw<FormatError>([&] { parse_npy_header(bytes.data(), bytes.size(), "ctx"); },
                              {"ctx: npy header: ", message});
  }
  expect_throw<Error>([] { encode_npy_header(DType::kFloat32, {2, -1}); }, {"negative", "(2, -1)"});
}

// ------------------------------------------------------------------------------ member reader

// What NpyMemberReader made of one member.
struct Decoded {
  NpyMemberReader::Result result = NpyMemberReader::Result::kSkipped;
  NpyHeader header;
  Bytes data;  // The allocated destination.
  std::string text;
  int allocations = 0;
};

// Feeds `member` to an NpyMemberReader in chunks of the sizes `chunks` (cycled; all of it at
// once when empty), telling it the member has `member_size` bytes (default: member.size()).
Decoded decode(const Bytes& member, const std::vector<std::size_t>& chunks = {},
               std::optional<uint64_t> member_size = std::nullopt) {
  Decoded out;
  NpyMemberReader reader(member_size.value_or(member.size()), "ctx", [&](const NpyHeader& header) {
    ++out.allocations;
    out.data.assign(header.data_size(), 0xAB);
    return out.data.data();
  });
  std::size_t offset = 0;
  for (std::size_t i = 0; offset < member.size(); ++i) {
    const std::size_t chunk = chunks.empty() ? member.size() : chunks[i % chunks.size()];
    const std::size_t take = std::min(chunk, member.size() - offset);
    reader.feed(member.data() + offset, take);
    offset += take;
  }
  out.result = reader.finish();
  out.header = reader.header();
  out.text = reader.text();
  return out;
}

// Members of several kinds and header versions, with their data.
std::vector<std::pair<Bytes, Bytes>> sample_members() {
  const Bytes f4 = as_bytes(std::vector<float>{1, -2, 3.5, 4, 5, 6});
  const Bytes i8 = as_bytes(std::vector<int64_t>{7});
  std::vector<std::pair<Bytes, Bytes>> members = {
      {npy(DType::kFloat32, {2, 3}, f4), f4},
      {npy(DType::kInt64, {}, i8), i8},
      {npy(DType::kUInt8, {0, 5}, {}), {}},
      {raw_npy(2, "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }"), {}},
  };
  members[3].first.push_back(9);  // the v2.0 member's one element
  members[3].second.push_back(9);
  Bytes v3 = raw_npy(3, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }\n");
  v3.insert(v3.end(), f4.begin(), f4.end());
  members.emplace_back(v3, f4);
  Bytes empty_dict = raw_npy(1, "");  // a zero-length header text: complete at its prefix
  members.emplace_back(empty_dict, Bytes{});
  return members;
}

TEST(NpyMemberReader, HeaderArrivingOneByteAtATime) {
  for (const auto& [member, data] : sample_members()) {
    if (member.size() == 10) {  // the empty dict: complete at its prefix, then refused
      expect_throw<FormatError>([&] { decode(member, {1}); }, {"ctx: npy header: expected '{'"});
      continue;
    }
    const Decoded whole = decode(member);
    const Decoded bytewise = decode(member, {1});
    EXPECT_EQ(bytewise.result, NpyMemberReader::Result::kArray);
    EXPECT_EQ(bytewise.allocations, 1);
    EXPECT_EQ(bytewise.data, data);
    EXPECT_EQ(bytewise.header.shape, whole.header.shape);
    EXPECT_EQ(bytewise.header.dtype, whole.header.dtype);
    EXPECT_EQ(bytewise.header.fortran_order, whole.header.fortran_order);
    EXPECT_EQ(bytewise.header.header_size + data.size(), member.size());
  }
}

TEST(NpyMemberReader, HeaderSplitAcrossChunks) {
  const auto members = sample_members();
  const auto& [member, data] = members.front();
  for (std::size_t first = 1; first < member.size(); ++first) {
    SCOPED_TRACE(first);
    const Decoded two = decode(member, {first, member.size()});
    EXPECT_EQ(two.data, data);
    EXPECT_EQ(two.allocations, 1);
    const Decoded three = decode(member, {first, 3});
    EXPECT_EQ(three.data, data);
  }
  const std::vector<std::vector<std::size_t>> patterns = {{2}, {3}, {7}, {9, 1}, {63, 1, 2}};
  for (const auto& pattern : patterns) {
    EXPECT_EQ(decode(member, pattern).data, data);
  }
}

TEST(NpyMemberReader, OversizedDeclaredHeaderIsRefusedFromItsPrefix) {
  // The length field alone condemns the header: nothing past the prefix is needed or buffered.
  Bytes prefix{0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0};
  LeAppender(prefix).u32(static_cast<uint32_t>(kMaxNpyHeaderLength + 1));
  NpyMemberReader reader(uint64_t{1} << 40, "ctx", [](const NpyHeader&) -> uint8_t* {
    ADD_FAILURE() << "allocated";
    return nullptr;
  });
  expect_throw<FormatError>([&] { reader.feed(prefix.data(), prefix.size()); },
                            {"ctx: npy header: header length 1048577 is too large"});
  // A header reaching past the member's end is refused as soon as its length is known.
  Bytes long_header{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  LeAppender(long_header).u16(1000);
  NpyMemberReader short_member(200, "ctx", [](const NpyHeader&) { return nullptr; });
  expect_throw<FormatError>(
      [&] {
        for (uint8_t byte : long_header) short_member.feed(&byte, 1);
      },
      {"ctx: npy header: truncated: it declares 1010 bytes, the member holds 200"});
  // Bad magic and versions are seen as early as the bytes show them.
  const Bytes not_npy{'P', 'K'};
  NpyMemberReader early(100, "ctx", [](const NpyHeader&) { return nullptr; });
  expect_throw<FormatError>([&] { early.feed(not_npy.data(), 1); }, {"bad magic"});
  const Bytes v4 = raw_npy(4, "{}");
  NpyMemberReader version(v4.size(), "ctx", [](const NpyHeader&) { return nullptr; });
  expect_throw<FormatError>([&] { version.feed(v4.data(), 8); }, {"unsupported version 4.0"});
}

TEST(NpyMemberReader, MemberSizeDisagreeingWithHeaderAllocatesNothing) {
  const Bytes member = npy(DType::kFloat64, {1}, as_bytes(std::vector<double>{2.5}));
  for (const uint64_t size : {member.size() - 4, member.size() + 4, uint64_t{1} << 62}) {
    SCOPED_TRACE(size);
    NpyMemberReader reader(size, "ctx", [](const NpyHeader&) -> uint8_t* {
      ADD_FAILURE() << "allocated although the sizes disagree";
      return nullptr;
    });
    const std::string holds = std::to_string(size - (member.size() - 8));
    expect_throw<FormatError>(
        [&] { reader.feed(member.data(), std::min<uint64_t>(size, member.size())); },
        {"ctx: the header declares 8 data bytes, the member holds " + holds});
  }
  // The "lying" header of a huge array in a small member (npz_test has it end to end).
  Bytes lying = raw_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }");
  lying.resize(lying.size() + 16);
  expect_throw<FormatError>([&] { decode(lying, {5}); },
                            {"the header declares 8000000 data bytes, the member holds 16"});
}

TEST(NpyMemberReader, ZeroDObjectArrayIsSkippedAndOthersRefused) {
  Bytes none = raw_npy(1, "{'descr': '|O', 'fortran_order': False, 'shape': (), }");
  const Bytes pickle{0x80, 0x02, 'N', '.'};  // pickle protocol 2: None
  none.insert(none.end(), pickle.begin(), pickle.end());
  for (const std::vector<std::size_t>& chunks : {std::vector<std::size_t>{}, {1}}) {
    const Decoded skipped = decode(none, chunks);
    EXPECT_EQ(skipped.result, NpyMemberReader::Result::kSkipped);
    EXPECT_EQ(skipped.allocations, 0);
  }
  // Its bytes still count against the member's size.
  expect_throw<FormatError>([&] { decode(none, {}, none.size() - 1); }, {"more than the member's"});
  expect_throw<FormatError>([&] { decode(none, {}, none.size() + 1); }, {"ctx: truncated"});

  Bytes objects = raw_npy(1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }");
  objects.insert(objects.end(), pickle.begin(), pickle.end());
  try {
    decode(objects, {1});
    ADD_FAILURE() << "an object array of shape (2,) was accepted";
  } catch (const NpyObjectArrayError& error) {
    EXPECT_EQ(error.shape(), std::vector<uint64_t>{2});
    EXPECT_THAT(error.what(), HasSubstr("ctx: npy header: object arrays"));
  }
}

// A big-endian member of `descr` and shape (n,) holding `big_endian_data`.
Bytes big_endian_npy(const std::string& descr, std::size_t n, const Bytes& big_endian_data) {
  Bytes out = raw_npy(1, "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" +
                             std::to_string(n) + ",), }");
  out.insert(out.end(), big_endian_data.begin(), big_endian_data.end());
  return out;
}

// The bytes of `values` with each `unit`-byte group reversed (big-endian on this host).
template <class T>
Bytes swapped(const std::vector<T>& values, std::size_t unit = sizeof(T)) {
  Bytes bytes = as_bytes(values);
  for (std::size_t i = 0; i < bytes.size(); i += unit) {
    std::reverse(bytes.begin() + i, bytes.begin() + i + unit);
  }
  return bytes;
}

TEST(NpyMemberReader, BigEndianElementsAreSwappedInPlace) {
  const std::vector<int16_t> i2{1, -2, 0x1234};
  const std::vector<double> f8{1.5, -0.25, 1e300};
  const std::vector<float> c8{1.0f, -2.0f, 0.5f, 3.0f};  // two complex64: real, imaginary
  const std::vector<double> c16{0.5, 3.0, -7.0, 1e-3};   // two complex128
  struct Case {
    std::string descr;
    std::size_t n;
    Bytes big, little;
  };
  const std::vector<Case> cases = {
      {">i2", 3, swapped(i2), as_bytes(i2)},  {">f8", 3, swapped(f8), as_bytes(f8)},
      {">c8", 2, swapped(c8), as_bytes(c8)},  {">c16", 2, swapped(c16), as_bytes(c16)},
      {"<f8", 3, as_bytes(f8), as_bytes(f8)},  // little-endian: untouched
      {">u1", 2, Bytes{1, 2}, Bytes{1, 2}},    // single bytes have no order
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.descr);
    ASSERT_EQ(c.big.size(), c.little.size());
    const Bytes member = big_endian_npy(c.descr, c.n, c.big);
    EXPECT_EQ(decode(member).data, c.little);
    EXPECT_EQ(decode(member, {3}).data, c.little);
  }
  // Whole-complex reversal would swap real and imaginary parts: check the halves explicitly.
  const Decoded complex = decode(big_endian_npy(">c8", 2, swapped(c8)));
  float parts[4];
  std::memcpy(parts, complex.data.data(), sizeof parts);
  EXPECT_EQ(parts[0], 1.0f);
  EXPECT_EQ(parts[1], -2.0f);
}

TEST(NpyMemberReader, NumpyBigEndianFilesDecodeToNumpyValues) {
  // numpy's own big-endian members, checked against the little-endian bytes numpy gives.
  const std::string out = python(R"PY(
import io, numpy as np
for descr, values in [('>i2', [1, -2, 300]), ('>f8', [1.5, -1e300]), ('>c8', [1 - 2j]),
                      ('>c16', [0.5 + 3j, -1j]), ('>f2', [0.5, -2]), ('>i8', [-5])]:
    a = np.array(values, dtype=descr)
    b = io.BytesIO()
    np.save(b, a)
    print(b.getvalue().hex(), a.astype(a.dtype.newbyteorder('<')).tobytes().hex())
)PY");
  std::istringstream lines(out);
  const auto unhex = [](const std::string& text) {
    Bytes bytes;
    for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
      bytes.push_back(static_cast<uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16)));
    }
    return bytes;
  };
  int count = 0;
  for (std::string member_hex, little_hex; lines >> member_hex >> little_hex; ++count) {
    EXPECT_EQ(decode(unhex(member_hex), {5}).data, unhex(little_hex)) << member_hex;
  }
  EXPECT_EQ(count, 6);
}

TEST(NpyMemberReader, BoolsAreNormalized) {
  const Decoded bools = decode(npy(DType::kBool, {4}, {0, 1, 2, 0xFF}));
  EXPECT_EQ(bools.data, (Bytes{0, 1, 1, 1}));
}

TEST(NpyMemberReader, DataBeyondOrShortOfTheMemberIsRefused) {
  const Bytes member = npy(DType::kInt32, {2}, as_bytes(std::vector<int32_t>{1, 2}));
  // One byte more than the member holds.
  NpyMemberReader reader(member.size(), "ctx", [](const NpyHeader& header) {
    static Bytes memory;
    memory.resize(header.data_size());
    return memory.data();
  });
  reader.feed(member.data(), member.size());
  const uint8_t extra = 0;
  expect_throw<FormatError>([&] { reader.feed(&extra, 1); },
                            {"ctx: more than the member's " + std::to_string(member.size())});
  // Truncated data: the member's size says more is coming.
  expect_throw<FormatError>(
      [&] { decode(Bytes(member.begin(), member.end() - 1), {}, member.size()); },
      {"ctx: truncated: " + std::to_string(member.size() - 1) + " of"});
  // Truncated header: finish() names it as parse_npy_header does.
  expect_throw<FormatError>([&] { decode(Bytes(member.begin(), member.begin() + 20), {}, 1000); },
                            {"ctx: npy header: truncated"});
  expect_throw<FormatError>([&] { decode(Bytes(member.begin(), member.begin() + 4), {}, 1000); },
                            {"ctx: npy header: not an .npy array (bad magic)"});
  expect_throw<FormatError>([&] { decode({}, {}, 0); }, {"bad magic"});
}

TEST(NpyMemberReader, CallbackContract) {
  const Bytes member = npy(DType::kInt32, {2}, as_bytes(std::vector<int32_t>{1, 2}));
  expect_throw<Error>([] { NpyMemberReader(10, "ctx", nullptr); }, {"allocate must be set"});
  NpyMemberReader null_memory(member.size(), "ctx", [](const NpyHeader&) { return nullptr; });
  expect_throw<Error>([&] { null_memory.feed(member.data(), member.size()); },
                      {"ctx: allocate returned no memory for 8 bytes"});
  // The callback's own limit: its exception propagates from feed().
  NpyMemberReader limited(member.size(), "ctx", [](const NpyHeader& header) -> uint8_t* {
    throw Error("over the limit: " + std::to_string(header.data_size()));
  });
  expect_throw<Error>([&] { limited.feed(member.data(), member.size()); }, {"over the limit: 8"});
  // An empty array may get no memory at all.
  const Bytes empty = npy(DType::kFloat32, {0, 3}, {});
  NpyMemberReader none(empty.size(), "ctx", [](const NpyHeader& header) {
    EXPECT_EQ(header.data_size(), 0u);
    return nullptr;
  });
  none.feed(empty.data(), empty.size());
  EXPECT_EQ(none.finish(), NpyMemberReader::Result::kArray);
  EXPECT_EQ(none.header().shape, (std::vector<uint64_t>{0, 3}));
  expect_throw<Error>([&] { none.feed(empty.data(), 0); }, {"feed() after finish()"});
  expect_throw<Error>([&] { none.finish(); }, {"finish() called twice"});
}

TEST(NpyMemberReader, TextsUseTheirOwnBuffer) {
  const std::string text = "caf\xc3\xa9 \xf0\x9f\x98\x80";
  const std::string member = encode_npy_text(text, "ctx");
  const Bytes bytes(member.begin(), member.end());
  for (const std::vector<std::size_t>& chunks : {std::vector<std::size_t>{}, {1}, {7}}) {
    const Decoded decoded = decode(bytes, chunks);
    EXPECT_EQ(decoded.result, NpyMemberReader::Result::kText);
    EXPECT_EQ(decoded.allocations, 0);
    EXPECT_EQ(decoded.text, text);
  }
  // Big-endian texts, as numpy writes dtype '>U3'.
  Bytes big = raw_npy(1, "{'descr': '>U3', 'fortran_order': False, 'shape': (), }");
  for (char c : std::string("ab")) {
    const Bytes code{0, 0, 0, static_cast<uint8_t>(c)};
    big.insert(big.end(), code.begin(), code.end());
  }
  big.insert(big.end(), 4, 0);
  EXPECT_EQ(decode(big, {1}).text, "ab");
  // Only texts: a unicode array of several elements is refused before anything is buffered.
  Bytes many = raw_npy(1, "{'descr': '<U2', 'fortran_order': False, 'shape': (3,), }");
  many.insert(many.end(), 24, 'a');
  expect_throw<FormatError>([&] { decode(many); },
                            {"ctx: only 0-d unicode arrays (texts) are supported"});
  // Invalid code points in the file.
  Bytes surrogate = raw_npy(1, "{'descr': '<U1', 'fortran_order': False, 'shape': (), }");
  LeAppender(surrogate).u32(0xD800);
  expect_throw<FormatError>([&] { decode(surrogate); }, {"ctx: invalid code point 0xd800"});
}

// ---------------------------------------------------------------------------------- texts

TEST(NpyText, EncodeMatchesNumpyAndRoundTrips) {
  const std::vector<std::string> texts = {
      "",
      "a",
      "{\"log\": [1, 2]}",
      "caf\xc3\xa9",                       // 2-byte
      "\xe4\xb8\xad\xe6\x96\x87",          // 3-byte
      "\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf",  // 4-byte, U+10FFFF
      std::string("a\0b", 3),              // inner NUL
  };
  std::string script =
      "import io, sys, numpy as np\n"
      "for t in sys.argv[1:]:\n"
      "  b = io.BytesIO()\n"
      "  np.save(b, np.array(bytes.fromhex(t).decode('utf-8')))\n"
      "  print(b.getvalue().hex())\n";
  std::vector<std::string> args;
  for (const std::string& text : texts) {
    std::string hex;
    for (unsigned char c : text) {
      static const char kDigits[] = "0123456789abcdef";
      hex += kDigits[c >> 4];
      hex += kDigits[c & 15];
    }
    args.push_back(hex);
  }
  std::istringstream numpy_members(python(script, args));
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    const std::string member = encode_npy_text(text, "ctx");
    std::string expected_hex, hex;
    ASSERT_TRUE(std::getline(numpy_members, expected_hex));
    for (unsigned char c : member) {
      static const char kDigits[] = "0123456789abcdef";
      hex += kDigits[c >> 4];
      hex += kDigits[c & 15];
    }
    EXPECT_EQ(hex, expected_hex);
    const Decoded decoded = decode(Bytes(member.begin(), member.end()), {1});
    EXPECT_EQ(decoded.text, text);
    EXPECT_EQ(decoded.header.dtype, DType::kUnicode);
    EXPECT_TRUE(decoded.header.shape.empty());
  }
}

TEST(NpyText, InvalidUtf8IsRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xff", "invalid lead byte 0xff at byte 0"},
      {"ab\x80", "invalid lead byte 0x80 at byte 2"},
      {"\xc3\x28", "invalid continuation byte 0x28 at byte 1"},
      {"\xe4\xb8", "truncated sequence at byte 0"},
      {"\xc0\x80", "overlong form"},                // NUL in two bytes
      {"\xe0\x80\xaf", "overlong form"},            // '/' in three
      {"\xf0\x82\x82\xac", "overlong form"},        // U+20AC in four
      {"\xed\xa0\x80", "code point 0xd800"},        // surrogate
      {"\xed\xbf\xbf", "code point 0xdfff"},        // surrogate
      {"\xf4\x90\x80\x80", "code point 0x110000"},  // past Unicode
      {"\xf7\xbf\xbf\xbf", "code point 0x1fffff"},
      {"\xf8\x88\x80\x80\x80", "invalid lead byte 0xf8"},
  };
  for (const auto& [input, why] : cases) {
    const std::string& text = input;
    expect_throw<Error>([&] { encode_npy_text(text, "npz_savefun: key 't'"); },
                        {"npz_savefun: key 't' holds a text that is not valid UTF-8 (", why});
  }
}

TEST(NpyText, DecodeTrimsTrailingNulsAndRefusesInvalidCodePoints) {
  const auto utf32 = [](const std::vector<uint32_t>& codes, bool big_endian = false) {
    Bytes bytes;
    for (uint32_t code : codes) {
      LeAppender(bytes).u32(big_endian ? __builtin_bswap32(code) : code);
    }
    return bytes;
  };
  const auto decode_text = [](const Bytes& bytes, bool big_endian = false) {
    return decode_npy_text(bytes.data(), bytes.size(), big_endian, "ctx");
  };
  EXPECT_EQ(decode_text(utf32({'a', 'b', 0, 0})), "ab");
  EXPECT_EQ(decode_text(utf32({'a', 0, 'b', 0})), std::string("a\0b", 3));
  EXPECT_EQ(decode_text(utf32({0, 0})), "");
  EXPECT_EQ(decode_text({}), "");
  EXPECT_EQ(decode_text(utf32({0x1F600, 0xE9, 0}, true), true), "\xf0\x9f\x98\x80\xc3\xa9");
  EXPECT_EQ(decode_text(utf32({0x10FFFF, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000})),
            "\xf4\x8f\xbf\xbf\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80");
  for (const uint32_t code : {0xD800u, 0xDFFFu, 0x110000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(code);
    const Bytes bytes = utf32({'a', code});
    expect_throw<FormatError>([&] { decode_text(bytes); },
                              {"ctx: invalid code point 0x", "in a unicode array"});
  }
  const Bytes ragged{'a', 0, 0};
  expect_throw<FormatError>([&] { decode_text(ragged); }, {"ctx: a unicode array of 3 bytes"});
}

// --------------------------------------------------------------------- parallel deflate

// The threads of this process, from /proc/self/task.
std::size_t thread_count() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    ++count;
  }
  return count;
}

// One ParallelDeflateWriter member and the bytes it stands for.
struct PrefixedMember {
  std::string name;
  std::string prefix;
  Bytes data;
  Bytes whole() const {
    Bytes out(prefix.begin(), prefix.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
  }
};

Bytes random_bytes(std::size_t size, unsigned seed) {
  Bytes out(size);
  std::mt19937 rng(seed);
  for (auto& byte : out) byte = static_cast<uint8_t>(rng());
  return out;
}

// Members of many sizes: float weights, an empty array, a scalar, zeros, an .npy given whole
// (no prefix), a prefix longer than one stored block, a prefix alone, nothing at all.
std::vector<PrefixedMember> prefixed_members() {
  std::vector<float> weights(5 << 18);  // 5 MiB
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& w : weights) w = normal(rng);
  std::vector<int64_t> ramp(1000);
  for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<int64_t>(i) * 7 - 300;
  const Bytes ramp_npy = npy(DType::kInt64, {1000}, as_bytes(ramp));
  const Bytes long_prefix = random_bytes(150000, 3);
  return {
      {"weights.npy", encode_npy_header(DType::kFloat32, {5 << 18}), as_bytes(weights)},
      {"empty.npy", encode_npy_header(DType::kFloat32, {0, 4}), {}},
      {"scalar.npy", encode_npy_header(DType::kFloat64, {}), as_bytes(std::vector<double>{2.5})},
      {"zeros.npy", encode_npy_header(DType::kUInt8, {3 << 20}), Bytes(3 << 20, 0)},
      {"whole.npy", "", ramp_npy},
      {"long_prefix.bin", std::string(long_prefix.begin(), long_prefix.end()),
       random_bytes(1000, 4)},
      {"prefix_only.bin", std::string(100, 'p'), {}},
      {"nothing.bin", "", {}},
  };
}

std::string write_parallel(const std::string& target, const std::vector<PrefixedMember>& members,
                           unsigned threads, int level = ZipWriter::kDefaultLevel) {
  File out(target, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  ZipWriter writer(out);
  {
    ParallelDeflateWriter deflater(writer, level, threads);
    EXPECT_EQ(deflater.threads(), threads);
    for (const PrefixedMember& member : members) {
      deflater.add({member.name, member.prefix, member.data.data(), member.data.size(), nullptr});
    }
    deflater.finish();
  }
  writer.finish();
  out.close();
  return target;
}

using ParallelDeflateTest = TempDirTest;

TEST_F(ParallelDeflateTest, MembersReadBackInZipfileNumpyUnzipAndOurReader) {
  const std::vector<PrefixedMember> members = prefixed_members();
  const std::string zip = write_parallel(path("parallel.npz"), members, 3);
  // Python prints each member's name, size and CRC-32 as zipfile inflates it, and the CRC-32 of
  // each .npy array's elements as numpy loads them.
  const std::string output = python(R"PY(
import sys, zipfile, zlib, numpy as np
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    for info in z.infolist():
        assert info.compress_type == zipfile.ZIP_DEFLATED, info
        assert info.extract_version == 20 and info.flag_bits == 0, info  # sizes known: no ZIP64
        data = z.read(info)
        print('member', info.filename, len(data), zlib.crc32(data))
        if info.filename.endswith('.npy'):
            a = np.load(z.open(info))
            print('array', info.filename, a.dtype.str, a.shape, zlib.crc32(a.tobytes()))
)PY",
                                    {zip});
  for (const PrefixedMember& member : members) {
    const Bytes whole = member.whole();
    EXPECT_THAT(output,
                HasSubstr("member " + member.name + " " + std::to_string(whole.size()) + " " +
                          std::to_string(crc32_update(0, whole.data(), whole.size()))));
  }
  const auto array_line = [](const std::string& name, const std::string& dtype,
                             const std::string& shape, const Bytes& data) {
    return "array " + name + " " + dtype + " " + shape + " " +
           std::to_string(crc32_update(0, data.data(), data.size()));
  };
  EXPECT_THAT(output, HasSubstr(array_line("weights.npy", "<f4", "(1310720,)", members[0].data)));
  EXPECT_THAT(output, HasSubstr(array_line("empty.npy", "<f4", "(0, 4)", {})));
  EXPECT_THAT(output, HasSubstr(array_line("scalar.npy", "<f8", "()", members[2].data)));
  EXPECT_THAT(output, HasSubstr(array_line("zeros.npy", "|u1", "(3145728,)", members[3].data)));
  const Bytes ramp(members[4].data.begin() + 128, members[4].data.end());  // after the header
  EXPECT_THAT(output, HasSubstr(array_line("whole.npy", "<i8", "(1000,)", ramp)));
  expect_unzip_ok(zip);

  ZipReader reader(zip);
  reader.verify();
  ASSERT_EQ(reader.entries().size(), members.size());
  for (std::size_t i = 0; i < members.size(); ++i) {
    EXPECT_EQ(reader.entries()[i].name, members[i].name);
    EXPECT_EQ(reader.read_all(reader.entries()[i]), members[i].whole()) << members[i].name;
  }
  // Random floats shrink a little (their exponents), zeros a lot.
  EXPECT_LT(reader.find("weights.npy")->compressed_size, members[0].data.size());
  EXPECT_LT(reader.find("zeros.npy")->compressed_size, members[3].data.size() / 100);
}

TEST_F(ParallelDeflateTest, PrefixIsStoredBlocksAheadOfTheCompressedData) {
  const std::vector<PrefixedMember> members = prefixed_members();
  const std::string zip = write_parallel(path("layout.zip"), members, 2);
  const Bytes bytes = read_file(zip);
  ZipReader reader(zip);
  // Each stored block: 0x00 (BFINAL 0, BTYPE 00), LEN, ~LEN, then the prefix's bytes verbatim.
  const auto expect_stored_prefix = [&](const PrefixedMember& member) {
    SCOPED_TRACE(member.name);
    std::size_t at = reader.find(member.name)->data_offset;
    for (std::size_t done = 0; done < member.prefix.size();) {
      const std::size_t length = std::min<std::size_t>(member.prefix.size() - done, 0xFFFF);
      ASSERT_EQ(bytes[at], 0);
      ASSERT_EQ(load_le16(&bytes[at + 1]), length);
      ASSERT_EQ(load_le16(&bytes[at + 3]), static_cast<uint16_t>(~length));
      ASSERT_EQ(std::string(bytes.begin() + at + 5, bytes.begin() + at + 5 + length),
                member.prefix.substr(done, length));
      at += 5 + length;
      done += length;
    }
    // Then libdeflate's whole stream of the data: its first block is the final one for short
    // data (bit 0 set), and an empty stream is one empty final stored block.
    if (member.data.empty()) {
      EXPECT_EQ(Bytes(bytes.begin() + at, bytes.begin() + at + 5), (Bytes{1, 0, 0, 0xFF, 0xFF}));
      EXPECT_EQ(at + 5,
                reader.find(member.name)->data_offset + reader.find(member.name)->compressed_size);
    }
  };
  expect_stored_prefix(members[0]);  // a 128-byte .npy header
  expect_stored_prefix(members[1]);  // a header and no data
  expect_stored_prefix(members[5]);  // 150,000 bytes: blocks of 65,535, 65,535 and 18,930
  expect_stored_prefix(members[6]);
  expect_stored_prefix(members[7]);  // nothing: just the empty final block
  // Python's zipfile inflates the layout and checks every CRC-32.
  EXPECT_EQ(python("import sys, zipfile\nprint(zipfile.ZipFile(sys.argv[1]).testzip())", {zip}),
            "None\n");
}

TEST_F(ParallelDeflateTest, SameBytesForEveryThreadCountAndLevelsMapToLibdeflate) {
  const std::vector<PrefixedMember> members = prefixed_members();
  const Bytes one = read_file(write_parallel(path("1.zip"), members, 1));
  EXPECT_EQ(read_file(write_parallel(path("2.zip"), members, 2)), one);
  EXPECT_EQ(read_file(write_parallel(path("5.zip"), members, 5)), one);
  EXPECT_EQ(read_file(write_parallel(path("again.zip"), members, 2)), one);
  // -1 is level 6; level 0 stores, level 9 compresses zeros at least as well as level 1.
  EXPECT_EQ(read_file(write_parallel(path("6.zip"), members, 2, 6)), one);
  const auto zeros_size = [&](int level) {
    const std::string zip = write_parallel(path("l.zip"), members, 2, level);
    const ZipReader reader(zip);
    return reader.find("zeros.npy")->compressed_size;
  };
  EXPECT_GT(zeros_size(0), uint64_t{3} << 20);
  EXPECT_LE(zeros_size(9), zeros_size(1));
  EXPECT_LT(zeros_size(1), uint64_t{1} << 16);
  File out(path("bad.zip"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
  ZipWriter writer(out);
  expect_throw<Error>([&] { ParallelDeflateWriter(writer, 10, 1); },
                      {"ZipWriter '" + path("bad.zip") + "'",
                       "deflate level must be -1 (default) or 0..9, got 10"});
  expect_throw<Error>([&] { ParallelDeflateWriter(writer, -2, 1); }, {"got -2"});
}

TEST_F(ParallelDeflateTest, AWorkersFailureNamesTheMemberAndEveryThreadIsJoined) {
  const std::size_t threads_before = thread_count();
  const std::vector<PrefixedMember> members = prefixed_members();
  File out(path("failed.zip"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
  ZipWriter writer(out);
  std::optional<ParallelDeflateWriter> deflater(std::in_place, writer, ZipWriter::kDefaultLevel, 4);
  EXPECT_EQ(thread_count(), threads_before + 4);
  for (std::size_t i = 0; i < 3; ++i) {
    deflater->add({members[i].name, members[i].prefix, members[i].data.data(),
                   members[i].data.size(), nullptr});
  }
  // A size no buffer can hold: the worker fails before it reads a byte of the data.
  const uint8_t byte = 0;
  deflater->add({"impossible.npy", "header", &byte, SIZE_MAX - 10, nullptr});
  // Rethrown when its turn to be written comes: here by add(), which makes room for the next
  // member (the impossible one is over the budget of bytes in flight).
  expect_throw<Error>(
      [&] {
        deflater->add(
            {members[4].name, "", members[4].data.data(), members[4].data.size(), nullptr});
        deflater->finish();
      },
      {"ZipWriter '" + path("failed.zip") +
       "': member 'impossible.npy': " + "compressing failed: member too large"});
  // The members before it were written, in order.
  EXPECT_GT(writer.bytes_written(), members[0].data.size() / 2);
  deflater.reset();
  EXPECT_EQ(thread_count(), threads_before);

  // Destroyed while members are queued and compressing (as when the caller throws): joined.
  {
    ParallelDeflateWriter busy(writer, 9, 2);
    for (int i = 0; i < 3; ++i) {
      busy.add({"busy" + std::to_string(i), "", members[0].data.data(), members[0].data.size(),
                nullptr});
    }
  }
  EXPECT_EQ(thread_count(), threads_before);
}

TEST_F(ParallelDeflateTest, WriteDeflatedChecksNamesAndState) {
  const std::string zip = write_zip("direct.zip", [&](ZipWriter& writer) {
    // One empty final stored block: the raw deflate stream of nothing.
    const Bytes empty_stream{1, 0, 0, 0xFF, 0xFF};
    writer.write_deflated("a", kCrc32Initial, 0, empty_stream.data(), empty_stream.size());
    expect_throw<Error>(
        [&] { writer.write_deflated("a", 0, 0, empty_stream.data(), empty_stream.size()); },
        {"member 'a': duplicate member name"});
    expect_throw<Error>([&] { writer.write_deflated("", 0, 0, nullptr, 0); },
                        {"name must be 1 to 65535 bytes long, got 0"});
    writer.begin_member("open");
    expect_throw<Error>(
        [&] { writer.write_deflated("b", 0, 0, empty_stream.data(), empty_stream.size()); },
        {"write_deflated() called inside a member"});
    writer.end_member();
  });
  expect_unzip_ok(zip);
  ZipReader reader(zip);
  reader.verify();
  ASSERT_EQ(reader.entries().size(), 2u);
  EXPECT_EQ(reader.entries()[0].method, static_cast<uint16_t>(Compression::kDeflate));
}

}  // namespace
}  // namespace tth::container
