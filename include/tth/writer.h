// Writer: schedules the commit of a snapshot.
//
// A snapshot extension hands its writer the state and the final path; the writer commits it
// with the savefun through atomic_write (atomic_file.h), then calls `committed` (where the
// snapshot applies n_retains, so an old snapshot is deleted only after the new one is
// durable). SimpleWriter does all of it in the training thread; ThreadWriter and QueueWriter
// (async_writer.h) copy the state and write it in a background thread.
//
// Thread safety: write and finalize are called from the training thread. `committed` runs on
// the thread that commits (a background thread for an asynchronous writer): it must not touch
// the hook or anything else the training thread changes.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "tth/savefun.h"
#include "tth/state_dict.h"

namespace tth {

/// Base class of writers.
class Writer {
 public:
  virtual ~Writer() = default;
  /// Commits `state` to `path`, then calls `committed`. Errors propagate (or, for an
  /// asynchronous writer, are raised at the next write or at finalize).
  virtual void write(const std::string& path, StateDict state,
                     const std::function<void()>& committed) = 0;
  /// Waits for pending writes and raises a pending error. Default: nothing pending.
  virtual void finalize() {}
};

/// Writes synchronously in the caller's thread.
class SimpleWriter : public Writer {
 public:
  /// REQUIRES: a callable savefun. Default: torch_savefun().
  explicit SimpleWriter(SaveFunction savefun = torch_savefun());
  void write(const std::string& path, StateDict state,
             const std::function<void()>& committed) override;

 private:
  SaveFunction savefun_;
};

}  // namespace tth
