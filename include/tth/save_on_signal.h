// Save on preemption: a signal asks for a snapshot at the next iteration boundary.
//
//   hook.extend(tth::snapshot(tth::SnapshotOptions().autoload(true)));
//   hook.extend(tth::save_on_signal());  // SIGTERM, SIGUSR1; saves, then stops the loop
//   while (!hook.done()) hook.run_iteration(step);
//
// Clusters preempt a job with a signal (SIGTERM, often SIGUSR1 some minutes before the kill).
// The extension installs a handler (sigaction, SA_RESTART) for each of its signals at
// initialize. The handler only sets a lock-free atomic flag: no allocation, no lock, no I/O,
// so it is safe whatever the interrupted code was doing. The extension runs every iteration
// with the lowest priority, after every other extension of the iteration (extension.h phase
// 3: after the snapshots too). When a flag is set there, it
//   1. calls Snapshot::save(hook) on every snapshot extension (snapshot.h) registered with the
//      hook, in call order (or on those named by SaveOnSignalOptions::snapshots), except one
//      that saved at this iteration already (its trigger fired: Snapshot::last_saved()), whose
//      file holds this state. Snapshot::save ignores the snapshot's condition;
//   2. warns through tth::warn (diagnostics.h):
//      "save_on_signal: SIGTERM received; saved 'result/snapshot_iter_120' at iteration 120;
//      stopping";
//   3. calls hook.stop() (unless SaveOnSignalOptions::stop is false): done() returns true, the
//      extensions are finalized (an asynchronous writer finishes its write in its snapshot's
//      finalize, before this extension's), and the process can exit with status 0.
// The handlers stay installed until this extension's finalize, the last one, so a second
// signal during the save or the final write only sets the flag again: with stop(true) it is
// ignored (the state of this iteration is being saved), with stop(false) it asks for another
// save at the next boundary. An error of a save propagates as any extension's error does
// (extension.h phase 4). A signal that arrives after the last iteration boundary (the stop
// trigger fired) is only warned about at finalize. Finalize restores the dispositions that
// were in place before initialize (the saved struct sigaction); before initialize and after
// finalize a signal has its usual effect (SIGTERM's default ends the process).
//
// Handlers are process-wide, so a signal belongs to one extension at a time: initialize throws
// tth::Error when another save_on_signal that has not been finalized handles one of the same
// signals (two hooks in one process: give each its own signals, or finalize the first). A
// hook with no snapshot extension to save is also a tth::Error at initialize; an extension
// that runs after it (a priority given explicitly) is warned about there. The extension
// keeps no state across a resume.
//
// In a data-parallel job (HookOptions::process_group), every rank registers it, and the ranks
// agree each iteration (a one-number all-reduce) whether a signal reached any of them: a
// signal to one rank makes every rank save and stop at the same iteration, as the collectives
// of saving need. Thread safety: the signal may arrive on any thread (an
// asynchronous writer's too); everything else runs on the training thread.
#pragma once

#include <signal.h>  // struct sigaction
#include <torch/arg.h>

#include <csignal>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tth/extension.h"

namespace tth {

class Snapshot;

/// The default priority of save_on_signal: the lowest, so it runs after every extension.
inline constexpr int kSaveOnSignalPriority = std::numeric_limits<int>::min();

/// Options of save_on_signal.
struct SaveOnSignalOptions {
  /// The signals that ask for a save. Catchable, asynchronous signals only (not SIGKILL,
  /// SIGSTOP, or a fault such as SIGSEGV). Default {SIGTERM, SIGUSR1}.
  TORCH_ARG(std::vector<int>, signals) = std::vector<int>{SIGTERM, SIGUSR1};
  /// Stop the loop after the save (hook.stop()); false saves and continues. Default true.
  TORCH_ARG(bool, stop) = true;
  /// Names of the snapshot extensions to save (as registered, see extend). Default (empty):
  /// every snapshot extension; name them to leave out one whose file must not be overwritten
  /// out of turn (a best-model snapshot_object with a condition).
  TORCH_ARG(std::vector<std::string>, snapshots);
};

/// The extension; see the header comment.
class SaveOnSignal : public Extension {
 public:
  /// Throws tth::Error for an empty signal list or a signal that cannot be handled.
  explicit SaveOnSignal(SaveOnSignalOptions options = {});
  /// Restores the previous dispositions if finalize did not run.
  ~SaveOnSignal() override;
  SaveOnSignal(const SaveOnSignal&) = delete;
  SaveOnSignal& operator=(const SaveOnSignal&) = delete;

  /// Installs the handlers. Throws tth::Error when there is no snapshot to save, a name in
  /// snapshots() is not a registered snapshot, or another active save_on_signal handles one
  /// of the signals; nothing is installed then.
  void initialize(TorchTrainerHook& hook) override;
  /// Saves and stops if a signal arrived since the last call.
  void operator()(TorchTrainerHook& hook) override;
  /// Restores the previous dispositions.
  void finalize(TorchTrainerHook& hook) override;
  std::string default_name() const override { return "save_on_signal"; }
  TriggerRef default_trigger() const override { return {1, iteration}; }
  int default_priority() const override { return kSaveOnSignalPriority; }

  /// The signals handled, in the order given, without repeats.
  const std::vector<int>& signals() const noexcept { return signals_; }
  /// Whether the handlers are installed (between initialize and finalize).
  bool active() const noexcept { return !previous_.empty(); }

 private:
  void restore() noexcept;

  std::vector<int> signals_;
  bool stop_;
  std::vector<std::string> snapshot_names_;
  std::vector<std::shared_ptr<Snapshot>> snapshots_;  // what a signal saves, from initialize
  std::vector<struct sigaction> previous_;            // one per signal while installed
  int64_t saved_at_ = -1;                             // the iteration of the last save
};

/// A SaveOnSignal with `options`.
std::shared_ptr<SaveOnSignal> save_on_signal(SaveOnSignalOptions options = {});

}  // namespace tth
