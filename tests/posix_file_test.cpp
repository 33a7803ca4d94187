// Tests of tth::File (plugin/posix_file.h), the one owner of the library's descriptors, of
// DirectoryLock, and of the readers and writers built on File: ZipWriter on a File, and
// ZipReader refusing what is not a regular file. LibTorch-free.
#include "posix_file.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "container/zip_reader.h"
#include "container/zip_writer.h"
#include "test_util.h"
#include "tth/atomic_file.h"
#include "tth/error.h"

namespace tth {
namespace {

using test::Bytes;
using test::read_file;
using test::TempDir;
using test::write_file;
using ::testing::HasSubstr;

// More than one write_streaming writeback chunk (1 MiB) and not a multiple of a page.
constexpr std::size_t kLargeSize = (std::size_t{3} << 20) + 17;

Bytes random_bytes(std::size_t size, uint32_t seed) {
  std::mt19937 engine(seed);
  Bytes bytes(size);
  for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(engine());
  return bytes;
}

// Whether `fd` is an open descriptor of this process.
bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// Kills the test process (SIGALRM) if it is still alive `seconds` from now: a call that would
// block forever fails the test quickly instead of running into ctest's timeout.
class Watchdog {
 public:
  explicit Watchdog(unsigned seconds) { ::alarm(seconds); }
  ~Watchdog() { ::alarm(0); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
};
constexpr unsigned kHangSeconds = 20;

TEST(File, OpenMissingThrowsIOErrorNamingThePath) {
  const TempDir dir;
  const std::string missing = dir / "missing";
  try {
    File file(missing, O_RDONLY);
    ADD_FAILURE() << "opened a missing file";
  } catch (const IOError& error) {
    EXPECT_EQ(error.path(), missing);
    EXPECT_EQ(error.error_number(), ENOENT);
    EXPECT_THAT(error.what(), HasSubstr("open '" + missing + "'"));
    EXPECT_THAT(error.what(), HasSubstr(std::strerror(ENOENT)));
  }
}

TEST(File, DescriptorIsCloseOnExec) {
  const TempDir dir;
  const File file(dir / "f", O_WRONLY | O_CREAT);
  EXPECT_NE(::fcntl(file.fd(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_EQ(file.path(), dir / "f");
}

TEST(File, WritesReadBackIncludingLargeBuffers) {
  const TempDir dir;
  const std::string path = dir / "data";
  const Bytes small = random_bytes(100, 1);
  const Bytes large = random_bytes(kLargeSize, 2);
  {
    File file(path, O_WRONLY | O_CREAT | O_TRUNC);
    file.write_all(small.data(), small.size());
    file.write_streaming(large.data(), large.size());  // starts writeback at [100, +kLargeSize)
    file.write_streaming(small.data(), small.size());  // below the writeback threshold
    file.write_all(large.data(), large.size());
    file.sync();
    file.close();
  }
  Bytes expected;
  for (const Bytes* part : {&small, &large, &small, &large}) {
    expected.insert(expected.end(), part->begin(), part->end());
  }
  EXPECT_EQ(read_file(path), expected);

  const File file(path, O_RDONLY);
  EXPECT_EQ(file.size(), expected.size());
  EXPECT_TRUE(file.is_regular());
  Bytes back(expected.size());
  ASSERT_EQ(file.pread_all(back.data(), back.size(), 0), expected.size());
  EXPECT_EQ(back, expected);
  // At an offset, across the boundary between two writes.
  Bytes middle(large.size());
  ASSERT_EQ(file.pread_all(middle.data(), middle.size(), small.size()), large.size());
  EXPECT_EQ(middle, large);
}

TEST(File, PreadPastTheEndReturnsFewerBytes) {
  const TempDir dir;
  const std::string path = dir / "ten";
  write_file(path, Bytes{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  const File file(path, O_RDONLY);
  Bytes buffer(100, 0xAA);
  EXPECT_EQ(file.pread_all(buffer.data(), buffer.size(), 4), 6U);
  EXPECT_EQ(Bytes(buffer.begin(), buffer.begin() + 6), (Bytes{4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(buffer[6], 0xAA);  // nothing written beyond what was read
  EXPECT_EQ(file.pread_all(buffer.data(), buffer.size(), 10), 0U);
  EXPECT_EQ(file.pread_all(buffer.data(), buffer.size(), 1000), 0U);
  EXPECT_EQ(file.pread_all(buffer.data(), 0, 0), 0U);
}

TEST(File, PwriteAtAnOffsetDoesNotMoveThePosition) {
  const TempDir dir;
  const std::string path = dir / "patched";
  {
    File file(path, O_WRONLY | O_CREAT | O_TRUNC);
    file.write_all(Bytes(10, '.').data(), 10);
    file.pwrite_all("abc", 3, 4);
    file.write_all("XY", 2);      // continues at 10, not at 7
    file.pwrite_all("z", 1, 15);  // beyond the end: a hole of zeros
    file.close();
  }
  EXPECT_EQ(read_file(path),
            (Bytes{'.', '.', '.', '.', 'a', 'b', 'c', '.', '.', '.', 'X', 'Y', 0, 0, 0, 'z'}));
}

TEST(File, WriteToAReadOnlyFileThrowsIOErrorNamingThePath) {
  const TempDir dir;
  const std::string path = dir / "readonly";
  write_file(path, Bytes{1, 2, 3});
  File file(path, O_RDONLY);
  const Bytes data(10, 7);
  for (const bool positioned : {false, true}) {
    try {
      if (positioned) {
        file.pwrite_all(data.data(), data.size(), 0);
      } else {
        file.write_all(data.data(), data.size());
      }
      ADD_FAILURE() << "wrote to a read-only descriptor";
    } catch (const IOError& error) {
      EXPECT_EQ(error.path(), path);
      EXPECT_EQ(error.error_number(), EBADF);
      EXPECT_THAT(error.what(), HasSubstr(path));
    }
  }
  EXPECT_EQ(read_file(path), (Bytes{1, 2, 3}));
}

TEST(File, CloseReportsAnErrorAndClosesOnlyOnce) {
  const TempDir dir;
  File file(dir / "f", O_WRONLY | O_CREAT);
  // A descriptor closed behind the File's back makes its close fail: the error must reach the
  // caller, naming the file.
  ASSERT_EQ(::close(file.fd()), 0);
  try {
    file.close();
    ADD_FAILURE() << "close() of a closed descriptor did not throw";
  } catch (const IOError& error) {
    EXPECT_EQ(error.error_number(), EBADF);
    EXPECT_THAT(error.what(), HasSubstr("close '" + dir / "f" + "'"));
  }
  EXPECT_EQ(file.fd(), -1);
  EXPECT_NO_THROW(file.close());  // already closed: nothing to report
}

TEST(File, CloseClosesTheDescriptor) {
  const TempDir dir;
  File file(dir / "f", O_WRONLY | O_CREAT);
  const int fd = file.fd();
  file.close();
  EXPECT_FALSE(is_open(fd));
  EXPECT_EQ(file.fd(), -1);
}

TEST(File, MovedFromFileDoesNotCloseTheDescriptorAgain) {
  const TempDir dir;
  File original(dir / "a", O_WRONLY | O_CREAT);
  const int fd = original.fd();
  {
    const File moved(std::move(original));
    EXPECT_EQ(moved.fd(), fd);
    EXPECT_EQ(moved.path(), dir / "a");
    EXPECT_EQ(original.fd(), -1);  // NOLINT(bugprone-use-after-move): the point of the test
    EXPECT_TRUE(is_open(fd));
  }
  EXPECT_FALSE(is_open(fd));  // closed by `moved`
  // Another file on the same number: a second close, by `original`, would close this one.
  File other(dir / "b", O_WRONLY | O_CREAT);
  ASSERT_EQ(::dup2(other.fd(), fd), fd);
  {
    const File gone(std::move(original));  // destroys an empty File
  }
  EXPECT_TRUE(is_open(fd));
  ::close(fd);
}

TEST(File, MoveAssignmentClosesTheOverwrittenDescriptor) {
  const TempDir dir;
  File target(dir / "a", O_WRONLY | O_CREAT);
  File source(dir / "b", O_WRONLY | O_CREAT);
  const int old_fd = target.fd();
  const int new_fd = source.fd();
  target = std::move(source);
  EXPECT_FALSE(is_open(old_fd));
  EXPECT_EQ(target.fd(), new_fd);
  EXPECT_EQ(target.path(), dir / "b");
  EXPECT_TRUE(is_open(new_fd));
  target.write_all("x", 1);
  target.close();
  EXPECT_FALSE(is_open(new_fd));
  EXPECT_EQ(read_file(dir / "b"), Bytes{'x'});
}

TEST(File, OpenRegularReadsARegularFileBlocking) {
  const TempDir dir;
  write_file(dir / "f", Bytes{1, 2, 3, 4});
  const File file = File::open_regular(dir / "f");
  EXPECT_EQ(::fcntl(file.fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(::fcntl(file.fd(), F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(file.size(), 4U);
}

TEST(File, OpenRegularRefusesADirectory) {
  const TempDir dir;
  const std::string path = dir.path().string();
  EXPECT_THROW_WITH(File::open_regular(path), FormatError, "'" + path + "'");
  EXPECT_THROW_WITH(File::open_regular(path), FormatError, "not a regular file (a directory)");
}

TEST(File, OpenRegularRefusesAFifoWithoutBlocking) {
  const TempDir dir;
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const Watchdog watchdog(kHangSeconds);
  EXPECT_THROW_WITH(File::open_regular(fifo), FormatError, "'" + fifo + "'");
  EXPECT_THROW_WITH(File::open_regular(fifo), FormatError, "not a regular file (a FIFO)");
}

TEST(File, OpenRegularOfAMissingFileIsIOError) {
  const TempDir dir;
  EXPECT_THROW_WITH(File::open_regular(dir / "missing"), IOError, dir / "missing");
}

// ---------------------------------------------------------------- DirectoryLock

std::string text_of(const std::string& path) {
  const Bytes bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

TEST(DirectoryLock, ExcludesASecondLockAlsoInTheSameProcess) {
  const TempDir dir;
  const std::string lock_file = dir / kLockFileName;
  EXPECT_EQ(DirectoryLock::lock_path(dir.path().string()), lock_file);
  std::optional<DirectoryLock> first = DirectoryLock::try_lock(dir.path().string());
  ASSERT_TRUE(first);
  EXPECT_EQ(first->directory(), dir.path().string());
  EXPECT_EQ(text_of(lock_file), std::to_string(::getpid()) + "\n");
  long holder = -1;
  EXPECT_FALSE(DirectoryLock::try_lock(dir.path().string(), &holder));
  EXPECT_EQ(holder, ::getpid());
  EXPECT_FALSE(DirectoryLock::try_lock(dir / ".", &holder));  // however it is spelled
  EXPECT_EQ(text_of(lock_file),
            std::to_string(::getpid()) + "\n");  // the refused one wrote nothing

  // A move hands the lock over; only the last owner releases it.
  std::optional<DirectoryLock> moved(std::move(*first));
  first.reset();
  EXPECT_FALSE(DirectoryLock::try_lock(dir.path().string()));
  moved.reset();
  EXPECT_FALSE(std::filesystem::exists(lock_file));  // a released lock leaves no file
  EXPECT_TRUE(DirectoryLock::try_lock(dir.path().string()));
}

TEST(DirectoryLock, ALockFileWithoutAHolderBlocksNobody) {
  const TempDir dir;
  write_file(dir / kLockFileName, {'9', '9', '9', '9', '9', '9', '\n'});  // a killed holder's
  std::optional<DirectoryLock> lock = DirectoryLock::try_lock(dir.path().string());
  ASSERT_TRUE(lock);
  EXPECT_EQ(text_of(dir / kLockFileName), std::to_string(::getpid()) + "\n");
}

TEST(DirectoryLock, AnotherProcessHoldsItUntilItDies) {
  const TempDir dir;
  int ready[2], finish[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(finish), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child takes the lock, says so, and then waits (it is killed).
    std::optional<DirectoryLock> lock = DirectoryLock::try_lock(dir.path().string());
    const char status = lock ? 'y' : 'n';
    if (::write(ready[1], &status, 1) != 1) ::_exit(1);
    char ignored;
    while (::read(finish[0], &ignored, 1) < 0) {
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  char status = 0;
  ASSERT_EQ(::read(ready[0], &status, 1), 1);
  ASSERT_EQ(status, 'y');
  long holder = 0;
  EXPECT_FALSE(DirectoryLock::try_lock(dir.path().string(), &holder));
  EXPECT_EQ(holder, child);
  // Killed: the kernel drops its lock; its LOCK file stays, with its pid, and blocks nobody.
  ::kill(child, SIGKILL);
  int wait_status = 0;
  ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
  EXPECT_EQ(text_of(dir / kLockFileName), std::to_string(child) + "\n");
  EXPECT_TRUE(DirectoryLock::try_lock(dir.path().string()));
  ::close(ready[0]);
  ::close(finish[0]);
  ::close(finish[1]);
}

TEST(DirectoryLock, NeverTwoHoldersWhileReleasesUnlinkTheFile) {
  // Each release unlinks LOCK while others may have opened it: a lock taken on an unlinked
  // file must not count, or two holders would coexist (one on the old file, one on the new).
  const TempDir dir;
  std::atomic<int> holders{0}, acquired{0}, overlaps{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        std::optional<DirectoryLock> lock = DirectoryLock::try_lock(dir.path().string());
        if (!lock) continue;
        ++acquired;
        if (++holders != 1) ++overlaps;
        std::this_thread::sleep_for(std::chrono::microseconds(20));  // widens the window
        --holders;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_GT(acquired.load(), 0);
  EXPECT_FALSE(std::filesystem::exists(dir / kLockFileName));
}

TEST(DirectoryLock, AMissingOrUnusableDirectoryIsIOErrorNamingTheLockFile) {
  const TempDir dir;
  try {
    DirectoryLock::try_lock(dir / "missing");
    ADD_FAILURE() << "locked a missing directory";
  } catch (const IOError& error) {
    EXPECT_EQ(error.path(), dir / "missing/LOCK");
    EXPECT_EQ(error.error_number(), ENOENT);
  }
  write_file(dir / "file", {'x'});
  EXPECT_THROW_WITH(DirectoryLock::try_lock(dir / "file"), IOError, dir / "file/LOCK");
}

// ---------------------------------------------------------------- readers and writers on File

TEST(ZipReader, RefusesAFifoWithoutBlocking) {
  const TempDir dir;
  const std::string fifo = dir / "fifo.npz";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const Watchdog watchdog(kHangSeconds);
  EXPECT_THROW_WITH(container::ZipReader reader(fifo), FormatError, fifo);
}

TEST(ZipReader, RefusesADirectory) {
  const TempDir dir;
  const std::string path = dir / "dir.npz";
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0) << std::strerror(errno);
  EXPECT_THROW_WITH(container::ZipReader reader(path), FormatError, path);
}

TEST(ZipWriter, WritesThroughAFile) {
  const TempDir dir;
  const std::string path = dir / "a.zip";
  const Bytes small = random_bytes(1000, 3);
  const Bytes large = random_bytes(kLargeSize, 4);  // goes straight out through write_streaming
  {
    File file(path, O_WRONLY | O_CREAT | O_TRUNC);
    container::ZipWriter writer(file);
    writer.begin_member("small.bin");
    writer.write(small.data(), small.size());
    writer.end_member();
    writer.begin_member("large.bin", container::Compression::kStored,
                        container::ZipWriter::kDefaultLevel, large.size());
    writer.write(large.data(), large.size() / 2);
    writer.write(large.data() + large.size() / 2, large.size() - large.size() / 2);
    writer.end_member();  // patches a header that already left the buffer: pwrite_all
    writer.begin_member("deflated.bin", container::Compression::kDeflate);
    writer.write(large.data(), large.size());
    writer.end_member();
    writer.finish();
    EXPECT_EQ(writer.bytes_written(), file.size());
    file.close();
  }
  const container::ZipReader reader(path);
  reader.verify();
  ASSERT_EQ(reader.entries().size(), 3U);
  EXPECT_EQ(reader.read_all(*reader.find("small.bin")), small);
  EXPECT_EQ(reader.read_all(*reader.find("large.bin")), large);
  EXPECT_EQ(reader.read_all(*reader.find("deflated.bin")), large);
}

TEST(ZipWriter, WriteErrorNamesTheFilesPath) {
  const TempDir dir;
  const std::string path = dir / "readonly.zip";
  write_file(path, {});
  File file(path, O_RDONLY);
  container::ZipWriter writer(file);
  writer.begin_member("a");
  writer.write("abc", 3);
  writer.end_member();
  EXPECT_THROW_WITH(writer.finish(), IOError, "write '" + path + "'");
}

TEST(ZipWriter, MisuseNamesTheFilesPath) {
  const TempDir dir;
  const std::string path = dir / "misuse.zip";
  File file(path, O_WRONLY | O_CREAT | O_TRUNC);
  container::ZipWriter writer(file);
  EXPECT_THROW_WITH(writer.end_member(), Error, "ZipWriter '" + path + "'");
}

}  // namespace
}  // namespace tth
