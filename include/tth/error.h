// Errors thrown by TorchTrainerHook.
//
// Every failure the library reports is a `tth::Error` (a `std::runtime_error`), so one
// `catch (const tth::Error&)` handles them all. Subclasses exist where a caller may want to
// react differently: a corrupt or foreign file (`FormatError`), an operating-system failure on
// a path (`IOError`), and a state that does not fit what it is loaded into (`StateError`).
// Messages name the argument, key or file and the offending value, so a user can act on them:
//   argument checks  "<Who>: <argument> must ..., got <value>"
//   state errors     "<what>: <file>: key '<key>': <problem>" (no file part without a file)
#pragma once

#include <stdexcept>
#include <string>

namespace tth {

/// Base class of every exception thrown by the library.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file is not what it claims to be: truncated, corrupt, or of another format/version.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A system call on a path failed; carries the path and `strerror(errno)` in the message.
class IOError : public Error {
 public:
  /// `what` is the operation ("open", "fsync", ...); `error_number` an `errno` value.
  IOError(const std::string& what, const std::string& path, int error_number);

  /// The path the operation failed on.
  const std::string& path() const noexcept { return path_; }
  /// The `errno` value of the failure.
  int error_number() const noexcept { return error_number_; }

 private:
  std::string path_;
  int error_number_;
};

/// A collective of a data-parallel job failed (process_group.h): another rank died, stopped
/// calling, or could not be reached within the timeout; or the ranks disagree on what they
/// were asked to do (different snapshot settings, world sizes).
class DistributedError : public Error {
 public:
  using Error::Error;
};

/// A state (see state_dict.h) does not fit the object it is loaded into: a missing or extra
/// key, or a value of the wrong kind, dtype or shape. Nothing has been changed when it is
/// thrown. The message is "<what>: <file>: key '<key>': <problem>".
class StateError : public Error {
 public:
  /// `what` names the operation ("load_npz", "TorchTrainerHook::load_state_dict"), `key` the
  /// offending key and `problem` what is wrong with it; `file` may be empty.
  StateError(std::string what, std::string key, std::string problem, std::string file = {});

  /// The same error as seen by `what` loading `file` (e.g. autoload of a snapshot).
  StateError in_file(std::string what, std::string file) const;

  const std::string& operation() const noexcept { return what_; }
  const std::string& key() const noexcept { return key_; }
  const std::string& problem() const noexcept { return problem_; }
  /// The file the state came from; empty when it did not come from a file.
  const std::string& file() const noexcept { return file_; }

 private:
  std::string what_;
  std::string key_;
  std::string problem_;
  std::string file_;
};

}  // namespace tth
