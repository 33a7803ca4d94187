// TorchTrainerHook: the manager that attaches extensions to a LibTorch training loop.
//
// It counts iterations and epochs, holds the stop trigger, the named models, optimizers and
// state objects, and the extensions, and runs the extension protocol of extension.h around
// each step of the user's loop:
//
//   tth::TorchTrainerHook hook(tth::HookOptions(iters_per_epoch).stop_trigger({10, tth::epoch}));
//   hook.add_model("main", model);
//   hook.extend(tth::make_extension(print_loss),
//               tth::ExtendOptions().trigger({100, tth::iteration}));
//   while (!hook.done()) {
//     hook.run_iteration([&] {
//       ... forward, backward, step ...
//       tth::report("main/loss", loss);
//     });
//   }
//
// `Trainer` (trainer.h) runs this same loop for an Updater.
//
// The whole training state (state_dict(), load_state_dict()) is laid out as
// tth/state_layout.h describes. Optimizers supported: SGD, Adam, AdamW, Adagrad, RMSprop.
//
// Thread safety: none; use one manager from the training thread.
#pragma once

#include <torch/arg.h>

#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tth/extension.h"
#include "tth/reporter.h"
#include "tth/state_dict.h"
#include "tth/stateful.h"
#include "tth/torch_fwd.h"
#include "tth/trigger.h"

namespace tth {

class TrainingState;
class DirectoryLock;
class ProcessGroup;

/// Options of TorchTrainerHook.
struct HookOptions {
  /// REQUIRES: iters_per_epoch > 0 (it may be fractional: dataset size / batch size).
  explicit HookOptions(double iters_per_epoch) : iters_per_epoch_(iters_per_epoch) {}
  /// Batches per epoch. No default.
  TORCH_ARG(double, iters_per_epoch);
  /// Output directory for logs and snapshots, created when training starts and locked by the
  /// run until it is finalized (see TorchTrainerHook::start). Default "result".
  TORCH_ARG(std::string, out) = "result";
  /// When training ends. Default: never (the user's loop decides, or calls stop()).
  TORCH_ARG(TriggerRef, stop_trigger);
  /// This process's rank in a data-parallel job (process_group.h). With one, the reports
  /// (LogReport, PrintReport, ProgressBar, PlotReport) act on rank 0 only, and snapshots are
  /// coordinated across the ranks (snapshot.h, "Data-parallel jobs"). When training starts,
  /// the ranks compare their extensions (names, order, priorities): a rank that registered
  /// others fails every rank with tth::DistributedError. Default: none, one process.
  TORCH_ARG(std::shared_ptr<ProcessGroup>, process_group);
};

/// Manages extensions around a LibTorch training loop; see the header comment.
class TorchTrainerHook {
 public:
  /// Throws tth::Error when iters_per_epoch <= 0.
  explicit TorchTrainerHook(HookOptions options);
  /// Finalizes the extensions if that has not happened yet (errors are warned about through
  /// tth::warn, not thrown).
  ~TorchTrainerHook();
  // Not copyable or movable: the parts of its training state refer to it.
  TorchTrainerHook(const TorchTrainerHook&) = delete;
  TorchTrainerHook& operator=(const TorchTrainerHook&) = delete;
  TorchTrainerHook(TorchTrainerHook&&) = delete;
  TorchTrainerHook& operator=(TorchTrainerHook&&) = delete;

  // ---- Registration (before the first iteration) ----

  /// Registers `extension` with `options`; each unset option takes the extension's default.
  /// A name that is already used gets a suffix `_1`, `_2`, ...; returns the name actually
  /// used. Throws tth::Error for a null extension, a bad name, or when training has started.
  std::string extend(std::shared_ptr<Extension> extension, const ExtendOptions& options);
  /// The positional form, as Chainer's `trainer.extend(ext, name, trigger, priority)`.
  std::string extend(std::shared_ptr<Extension> extension,
                     std::optional<std::string> name = std::nullopt, TriggerRef trigger = {},
                     std::optional<int> priority = std::nullopt, bool call_before_training = false);

  /// Registers a model whose parameters and buffers are part of the state. Names are unique.
  void add_model(const std::string& name, std::shared_ptr<torch::nn::Module> model);
  /// Overload for module holders such as `torch::nn::Linear`.
  template <typename Contained>
  void add_model(const std::string& name, const torch::nn::ModuleHolder<Contained>& model) {
    add_model(name, model.ptr());
  }
  /// Registers an optimizer whose options and per-parameter state are part of the state.
  /// REQUIRES: SGD, Adam, AdamW, Adagrad or RMSprop (checked when the state is taken).
  void add_optimizer(const std::string& name, std::shared_ptr<torch::optim::Optimizer> optimizer);
  /// Registers an LR scheduler whose step count is part of the state.
  void add_scheduler(const std::string& name, std::shared_ptr<torch::optim::LRScheduler> scheduler);
  /// Registers an object whose state is saved under `state/<name>/`. Names are unique.
  void add_state(const std::string& name, std::shared_ptr<Stateful> object);

  // ---- The loop ----

  /// Starts training once: the resume phase (snapshot autoload), initialize, and at iteration
  /// 0 the call_before_training extensions (extension.h phases 1 and 2). done() and
  /// begin_iteration() call it, so a loop `while (!hook.done())` has its state restored
  /// before it reads any (a sampler's position, say). Runs the error path if it throws.
  ///
  /// One run per output directory: before any extension runs, it creates out() and takes its
  /// lock (`<out>/LOCK`, an flock as LevelDB's LOCK file, holding this process's pid), held
  /// until the extensions are finalized. If another run holds it (another process, or another
  /// manager in this one), it throws tth::Error "TorchTrainerHook: output directory 'result' is
  /// in use by another run (pid 1234 holds 'result/LOCK'); give each run its own out
  /// directory"; if the lock file cannot be created (an unwritable directory), tth::IOError
  /// "TorchTrainerHook: cannot use output directory 'result': create or lock 'result/LOCK':
  /// Permission denied". Both happen before training starts: no extension was called, started()
  /// stays false, and a later call tries again. The lock of a killed run dies with it.
  void start();

  /// Locks `directory` (created if missing) for this run, as start() locks out(), until the
  /// extensions are finalized. An extension that writes files into another directory calls it
  /// from its resume hook (the snapshot extensions do, for their directory), so that no other
  /// run writes there and the directory's stale temp files may be removed
  /// (tth/atomic_file.h). A directory this run holds already is not locked again. Throws
  /// tth::Error "TorchTrainerHook: directory '<dir>' is in use by another run (pid N holds
  /// '<dir>/LOCK'); give each run its own directory", or tth::IOError.
  void lock_directory(const std::string& directory);

  /// Runs one iteration around `step`: starts training on the first call (extension phase 1
  /// and 2), opens the observation, runs `step`, counts the iteration and runs the triggered
  /// extensions. If anything throws, runs the error path (phase 4) and rethrows.
  void run_iteration(const std::function<void()>& step);

  /// The explicit form of run_iteration for loops that cannot pass a callable:
  ///   try { hook.begin_iteration(); step(); hook.end_iteration(); }
  ///   catch (...) { hook.handle_error(std::current_exception()); throw; }
  /// begin_iteration and end_iteration run the error path themselves when they throw.
  void begin_iteration();
  void end_iteration();
  /// Runs the error path (on_error of every extension, guarded, then finalize) once; later
  /// calls do nothing. The caller rethrows.
  void handle_error(const std::exception_ptr& error) noexcept;

  /// True when training should end: after stop(), after an error, or once the stop trigger
  /// fired. Starts training first (start()). The stop trigger is evaluated once per iteration
  /// inside end_iteration (after the extensions' triggers, before snapshot-priority extensions run,
  /// so a snapshot holds the decision and the trigger's state of the completed iteration). The
  /// first time done() returns true, the extensions are finalized.
  bool done();
  /// Asks the loop to end: done() returns true from now on.
  void stop() noexcept { stop_requested_ = true; }
  /// Finalizes every extension (phase 5) if not done yet. Errors are rethrown after every
  /// extension had its finalize called.
  void finalize();

  // ---- Progress ----

  /// Completed iterations.
  int64_t iteration() const noexcept { return iteration_; }
  /// Completed epochs: floor(epoch_detail()).
  int64_t epoch() const noexcept;
  /// Fractional epochs: iteration / iters_per_epoch.
  double epoch_detail() const noexcept;
  /// epoch_detail() before the last iteration (0 at the start).
  double previous_epoch_detail() const noexcept;
  /// Whether the last iteration completed an epoch.
  bool is_new_epoch() const noexcept;
  double iters_per_epoch() const noexcept { return iters_per_epoch_; }
  /// Seconds of training, including the time before a resume.
  double elapsed_time() const;
  /// Whether the first iteration has begun (registration is closed).
  bool started() const noexcept { return started_; }
  /// The stop trigger's length, if it knows one (for progress displays).
  std::optional<Duration> training_length() const;
  /// Output directory.
  const std::string& out() const noexcept { return out_; }
  /// The data-parallel job this process is a rank of, or null.
  const std::shared_ptr<ProcessGroup>& process_group() const noexcept { return process_group_; }
  /// This process's rank: 0 without a process group.
  int rank() const noexcept { return rank_; }
  /// Number of ranks: 1 without a process group.
  int world_size() const noexcept { return world_size_; }

  /// Values reported during the current (or, between iterations, the last) iteration.
  const Observation& observation() const noexcept { return observation_; }
  Observation& observation() noexcept { return observation_; }

  // ---- Lookup ----

  /// The extension registered under `name`; throws tth::Error naming it if there is none.
  std::shared_ptr<Extension> extension(const std::string& name) const;
  /// Registered extension names in call order (priority, then registration).
  std::vector<std::string> extension_names() const;
  /// Registered models by name.
  const std::map<std::string, std::shared_ptr<torch::nn::Module>>& models() const noexcept;
  /// Registered optimizers by name.
  const std::map<std::string, std::shared_ptr<torch::optim::Optimizer>>& optimizers()
      const noexcept;

  // ---- State ----

  /// The whole state, laid out as tth/state_layout.h describes.
  StateDict state_dict() const;
  /// Restores a state from state_dict(). The state is checked first (missing or extra keys,
  /// kinds, dtypes, shapes: tth::StateError "TorchTrainerHook::load_state_dict: key '<key>':
  /// <problem>") and nothing changes if that fails; if applying it fails later (a
  /// component's own load throws), the previous state is put back before the error
  /// propagates. With strict = false, keys that nothing here saves are ignored and missing
  /// keys keep their current values (per key for a model, per parameter for an optimizer,
  /// all or nothing for an extension, trigger or state object); the keys left out are
  /// returned and warned about (tth/diagnostics.h), as PyTorch's load_state_dict does.
  IncompatibleKeys load_state_dict(const StateDict& state, bool strict = true);
  /// The same for a state handed over (a state just read from a file, as autoload does): its
  /// values are freed as they are applied, so loading needs about one state of memory more
  /// than the model, not two.
  IncompatibleKeys load_state_dict(StateDict&& state, bool strict = true);

 private:
  struct Entry {
    std::string name;
    std::shared_ptr<Extension> extension;
    std::shared_ptr<Trigger> trigger;  // null: never fires
    int priority;
    bool call_before_training;
  };

  void lock_output_directory();
  void take_lock(const std::string& directory, const char* what, const char* advice);
  /// In a job: throws DistributedError on every rank unless all registered the same extensions.
  void check_same_extensions();
  void run_start_phases();
  bool length_reached() const;
  void check_registration_open(const char* who, const std::string& name) const;
  void run_triggered_extensions();
  template <typename Hook>
  void for_each_guarded(const char* phase, Hook&& hook) noexcept;
  StateDict counters() const;
  void load_counters(const StateDict& state);

  double iters_per_epoch_;
  std::string out_;
  std::shared_ptr<ProcessGroup> process_group_;
  int rank_ = 0;
  int world_size_ = 1;
  std::shared_ptr<Trigger> stop_trigger_;
  std::vector<Entry> entries_;  // sorted by priority, stable
  std::unique_ptr<TrainingState> state_;
  // The locks of out_ and of the directories extensions write into, from start to finalize.
  std::vector<std::unique_ptr<DirectoryLock>> locks_;
  Observation observation_;
  std::optional<ObservationScope> observation_scope_;  // open from begin to end_iteration

  int64_t iteration_ = 0;
  bool started_ = false;
  bool in_iteration_ = false;
  bool failed_ = false;
  bool finalized_ = false;
  bool stop_requested_ = false;
  // The stop trigger fired. Saved as manager/stop_triggered; on load it stands only if the
  // current stop trigger is finished or its training length is reached.
  bool stop_triggered_ = false;
  double elapsed_before_ = 0;  // seconds trained before this process (a resume)
  std::chrono::steady_clock::time_point start_time_;
};

}  // namespace tth
