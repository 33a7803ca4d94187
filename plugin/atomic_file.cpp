#include "tth/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>

#include "posix_file.h"
#include "tth/error.h"

namespace tth {

namespace {

constexpr const char* kTempMarker = ".tmp.";
constexpr int kRandomChars = 12;
constexpr const char* kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
constexpr int kCreateAttempts = 100;

std::string random_suffix() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  std::uniform_int_distribution<int> pick(0, 35);
  std::string suffix(kRandomChars, ' ');
  for (char& c : suffix) c = kAlphabet[pick(engine)];
  return suffix;
}

std::string parent_of(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

void sync_path(const std::string& path) { File(path, O_RDONLY).sync(); }

namespace {

// Creates `directory` and its missing parents. Each new directory's entry is made durable by
// an fsync of the directory holding it, as the final rename is: else a power loss could keep
// the renamed file but lose the new subdirectory it lies in.
void create_directories_durably(const std::filesystem::path& directory) {
  std::error_code error;
  if (directory.empty() || std::filesystem::is_directory(directory, error)) return;
  const std::filesystem::path parent = directory.parent_path();
  create_directories_durably(parent);
  if (::mkdir(directory.c_str(), 0777) != 0) {
    const int mkdir_error = errno;
    if (mkdir_error != EEXIST) throw IOError("create directory", directory.string(), mkdir_error);
    if (!std::filesystem::is_directory(directory, error)) {
      throw IOError("create directory", directory.string(), ENOTDIR);
    }
    return;  // made by someone else meanwhile
  }
  sync_path(parent.empty() ? "." : parent.string());
}

}  // namespace

bool is_temp_file_name(const std::string& file_name) {
  // .<name>.tmp.<kRandomChars of kAlphabet>
  const std::size_t marker = std::string(kTempMarker).size();
  if (file_name.size() < 1 + 1 + marker + kRandomChars || file_name[0] != '.') return false;
  const std::size_t suffix = file_name.size() - kRandomChars;
  if (file_name.compare(suffix - marker, marker, kTempMarker) != 0) return false;
  for (std::size_t i = suffix; i < file_name.size(); ++i) {
    const char c = file_name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

namespace {

// Renaming over a FIFO or a device would silently replace it (a user's `/dev/stdout`, say): a
// target that exists must be a regular file (a symbolic link is followed, so one to a regular
// file is replaced by the new file, as before).
void check_target(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return;
    throw IOError("stat", path, errno);
  }
  if (!S_ISREG(info.st_mode)) {
    throw Error("atomic_write: '" + path + "' exists and is not a regular file (" +
                file_kind(info.st_mode) + ")");
  }
}

}  // namespace

void atomic_write(const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::filesystem::path target(path);
  if (target.filename().empty()) throw Error("atomic_write: '" + path + "' names no file");
  const std::string directory = parent_of(path);
  create_directories_durably(directory);
  check_target(path);

  std::string temp;
  for (int attempt = 0;; ++attempt) {
    temp = (std::filesystem::path(directory) /
            ("." + target.filename().string() + kTempMarker + random_suffix()))
               .string();
    try {
      // Created empty, mode 0666 & ~umask like any new file; `write` opens it again.
      const File created(temp, O_WRONLY | O_CREAT | O_EXCL);
      break;
    } catch (const IOError& failure) {
      if (failure.error_number() != EEXIST || attempt == kCreateAttempts) throw;
    }
  }
  try {
    write(temp);
    sync_path(temp);
    if (::rename(temp.c_str(), path.c_str()) != 0) throw IOError("rename to " + path, temp, errno);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  sync_path(directory);
}

std::vector<std::string> atomic_write_standalone(
    const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::string directory = parent_of(path);
  create_directories_durably(directory);
  // Held until the write is done, so that no other cleaner removes our own temp file.
  const std::optional<DirectoryLock> lock = DirectoryLock::try_lock(directory);
  std::vector<std::string> removed;
  if (lock) removed = remove_temp_files(directory);
  atomic_write(path, write);
  return removed;
}

std::vector<std::string> remove_temp_files(const std::string& directory) {
  std::vector<std::string> removed;
  std::error_code error;
  std::filesystem::directory_iterator it(directory, error), end;
  if (error) return removed;  // missing or unreadable: nothing of ours to clean
  for (; it != end; it.increment(error)) {
    if (error) break;
    const std::string name = it->path().filename().string();
    if (!is_temp_file_name(name) || !it->is_regular_file(error)) continue;
    if (::unlink(it->path().c_str()) == 0) removed.push_back(it->path().string());
  }
  return removed;
}

}  // namespace tth
