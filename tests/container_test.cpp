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

#include "test_util.h"
#include "container/crc32.h"
#include "container/endian.h"
#include "container/npy.h"
#include "container/zip_format.h"
#include "container/zip_reader.h"
#include "container/zip_writer.h"

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
    const int fd = ::open(target.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << target << ": " << std::strerror(errno);
    try {
      ZipWriter writer(fd, target);
      body(writer);
      writer.finish();
      EXPECT_EQ(writer.bytes_written(), static_cast<uint64_t>(::lseek(fd, 0, SEEK_END)));
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
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
  const int fd = ::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ZipWriter writer(fd, target);
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
  ::close(fd);
}

TEST_F(ZipWriterTest, WriteErrorIsIOErrorWithPath) {
  const std::string target = path("readonly.zip");
  write_file(target, {});
  const int fd = ::open(target.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ZipWriter writer(fd, target);
  add(writer, "a", Bytes(100, 1));
  expect_throw<IOError>([&] { writer.finish(); }, {"write", target});
  ::close(fd);
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

}  // namespace
}  // namespace tth::container
