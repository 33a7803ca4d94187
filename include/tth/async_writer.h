// Asynchronous writers: a snapshot that stalls training only for a copy of the state.
//
//   auto writer = std::make_shared<tth::ThreadWriter>(tth::npz_savefun());
//   hook.extend(tth::snapshot(tth::SnapshotOptions().writer(writer).n_retains(3)),
//               tth::ExtendOptions().trigger({1000, tth::iteration}));
//
// write() copies every tensor of the state into host buffers that the writer owns and reuses
// from one snapshot to the next (pinned memory when a tensor lives on a GPU), then returns; a
// background thread runs the savefun and the durable commit (atomic_file.h), then the
// `committed` callback (the snapshot's retention). The copy is the only stall, and since the
// file is written from the copy, never from the live tensors, it holds exactly the step at
// which write() was called, whatever the training thread does to the tensors afterwards.
// (Chainer's and pytorch-pfn-extras' writers shipped files that mixed two steps because their
// background thread read live tensors.)
//
// ThreadWriter keeps at most one write in flight: the next write() first waits for the
// previous one, then copies into the same buffers. QueueWriter queues several snapshots,
// bounded by the bytes of their copies (max_bytes): a write() that would exceed the bound
// waits until enough queued writes finished; a single snapshot larger than the bound waits for
// an empty queue and is then accepted alone, so that nothing deadlocks.
//
// Errors: an error of a background write (disk full, say) is raised by the next write() or by
// finalize(), never lost; it names the file. Later queued writes still run. finalize() waits
// for every pending write (the snapshot extension calls it when training ends, also after an
// error); the destructor waits too, and reports an error it cannot raise through tth::warn.
//
// Thread safety: write() and finalize() are called from one thread (the training thread).
// `committed` runs on the writer's thread, one commit at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tth/savefun.h"
#include "tth/writer.h"

namespace tth {

namespace detail {
class WriterThread;
}

/// Writes in a background thread, at most one write in flight; see the header comment.
class ThreadWriter : public Writer {
 public:
  /// REQUIRES: a callable savefun. Default: torch_savefun().
  explicit ThreadWriter(SaveFunction savefun = torch_savefun());
  ~ThreadWriter() override;
  void write(const std::string& path, StateDict state,
             const std::function<void()>& committed) override;
  void finalize() override;

 private:
  std::unique_ptr<detail::WriterThread> thread_;
};

/// Writes in a background thread from a queue bounded by bytes; see the header comment.
class QueueWriter : public Writer {
 public:
  /// REQUIRES: max_bytes > 0 (the bytes of the copied tensors of all queued snapshots, the
  /// one being written included), a callable savefun. Default savefun: torch_savefun().
  explicit QueueWriter(int64_t max_bytes, SaveFunction savefun = torch_savefun());
  ~QueueWriter() override;
  void write(const std::string& path, StateDict state,
             const std::function<void()>& committed) override;
  void finalize() override;

 private:
  std::unique_ptr<detail::WriterThread> thread_;
};

}  // namespace tth
