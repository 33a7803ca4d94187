// Errors thrown by TorchTrainerHook.
//
// Every failure the library reports is a `tth::Error` (a `std::runtime_error`), so one
// `catch (const tth::Error&)` handles them all. Subclasses exist where a caller may want to
// react differently: a corrupt or foreign file (`FormatError`), an operating-system failure on
// a path (`IOError`), and a state that does not fit what it is loaded into (`StateError`).
// Messages name the argument, key or file and the offending value, so a user can act on them.
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

/// A state (see state_dict.h) does not fit the object it is loaded into: a missing or extra
/// key, or a value of the wrong kind, dtype or shape. Nothing has been changed when it is thrown.
class StateError : public Error {
 public:
  using Error::Error;
};

}  // namespace tth
