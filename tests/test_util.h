// Test helpers that need no LibTorch (the container tests use them alone): a temporary
// directory, running commands and the Python oracle, file bytes, a free TCP port, and a
// throw-with-message check. support.h adds the LibTorch ones.
#pragma once

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tth::test {

/// The interpreter with Debian's numpy 1.24 and torch 1.13 (not the python3 first on PATH).
inline constexpr char kPython[] = "/usr/bin/python3";

/// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tth-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Appends to the zip sys.argv[1] (created if missing) a member sys.argv[2] holding the bytes
// sys.argv[3] (hex), then int(sys.argv[4]) zeros, deflated by zipfile with zlib at level 9
// (ZIP64 forced). The compressor flushes fully after each write, so that equal chunks compress
// to equal bytes: each distinct chunk is compressed once and its output repeated, which writes
// 4 GiB in seconds instead of half a minute, at the same ratio.
inline constexpr char kAppendZeros[] = R"(
import sys, zipfile, zlib
path, name, prefix, zeros = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
class Replaying:
    def __init__(self):
        self.zlib = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.last = (None, b'')
    def compress(self, data):
        if data is not self.last[0]:
            self.last = (data, self.zlib.compress(data) + self.zlib.flush(zlib.Z_FULL_FLUSH))
        return self.last[1]
    def flush(self):
        return self.zlib.flush()
zipfile._get_compressor = lambda *args: Replaying()
chunk = bytes(16 << 20)
with zipfile.ZipFile(path, 'a', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    with z.open(name, 'w', force_zip64=True) as member:
        member.write(prefix)
        for _ in range(zeros // len(chunk)):
            member.write(chunk)
        member.write(bytes(zeros % len(chunk)))
)";

/// Expects `statement` to throw `type` whose what() contains `fragment`.
#define EXPECT_THROW_WITH(statement, type, fragment)                              \
  EXPECT_THROW(                                                                   \
      {                                                                           \
        try {                                                                     \
          statement;                                                              \
        } catch (const type& error) {                                             \
          EXPECT_THAT(std::string(error.what()), ::testing::HasSubstr(fragment)); \
          throw;                                                                  \
        }                                                                         \
      },                                                                          \
      type)

struct CommandResult {
  int exit_code = -1;  // -1 if the command did not exit normally
  std::string output;  // stdout and stderr, interleaved
};

/// Runs `command` with /bin/sh and returns its exit code and output.
// A TCP port of 127.0.0.1 that is free now: the kernel's pick for port 0.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    result.output = "popen failed: " + std::string(std::strerror(errno));
    return result;
  }
  char chunk[4096];
  for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, pipe)) > 0;)
    result.output.append(chunk, n);
  const int status = ::pclose(pipe);
  if (status != -1 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

inline std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

/// A directory that no process may write, root included: mode 0500 for a user, a read-only
/// tmpfs mounted on it for root; both undone when destroyed. available() is false when root
/// cannot mount here: the test then skips (with kNoReadOnlyDirectory), as root writes anywhere.
class ReadOnlyDirectory {
 public:
  explicit ReadOnlyDirectory(std::string path) : path_(std::move(path)) {
    if (::geteuid() != 0) {
      std::filesystem::permissions(
          path_, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
      write_error_ = std::strerror(EACCES);
    } else if (run_command("mount -t tmpfs -o ro,size=64k tmpfs " + shell_quote(path_)).exit_code ==
               0) {
      mounted_ = true;
      write_error_ = std::strerror(EROFS);
    }
  }
  ~ReadOnlyDirectory() {
    if (mounted_) run_command("umount " + shell_quote(path_));
    std::error_code ignored;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ignored);
  }
  ReadOnlyDirectory(const ReadOnlyDirectory&) = delete;
  ReadOnlyDirectory& operator=(const ReadOnlyDirectory&) = delete;

  bool available() const { return !write_error_.empty(); }
  /// strerror of what a write there fails with (EACCES or EROFS).
  const std::string& write_error() const { return write_error_; }

 private:
  std::string path_;
  bool mounted_ = false;
  std::string write_error_;
};
inline constexpr char kNoReadOnlyDirectory[] =
    "root cannot mount a read-only tmpfs here, and root may write anywhere";

/// Runs `script` with kPython and `args` as sys.argv[1:]; fails the test (never skips) if the
/// interpreter is missing or the script exits non-zero. Returns the script's output.
inline std::string python(const std::string& script, const std::vector<std::string>& args = {}) {
  if (::access(kPython, X_OK) != 0) {
    ADD_FAILURE() << kPython << " is missing: install python3-numpy and python3-torch";
    return "";
  }
  std::string command = std::string(kPython) + " -c " + shell_quote(script);
  for (const std::string& arg : args) command += " " + shell_quote(arg);
  const CommandResult result = run_command(command);
  EXPECT_EQ(result.exit_code, 0) << "python failed:\n"
                                 << script << "\n--- output:\n"
                                 << result.output;
  return result.output;
}

using Bytes = std::vector<uint8_t>;

inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace tth::test
