// Snapshot extensions: save the training state, or one object, so training can resume.
//
//   hook.extend(tth::snapshot());                                   // whole state, every epoch
//   hook.extend(tth::snapshot(tth::SnapshotOptions().autoload(true).n_retains(3)));
//   hook.extend(tth::snapshot(tth::SnapshotOptions().n_retains(2).keep_best(
//       tth::KeepBestOptions(3, "validation/main/accuracy").mode(tth::Mode::kMax))));
//   hook.extend(tth::snapshot_object(model, "model_iter_{iteration}.pt"),
//               tth::ExtendOptions().trigger({1000, tth::iteration}));
//
// `snapshot()` saves everything TorchTrainerHook::state_dict() holds: counters, triggers,
// extensions, models, optimizers (options included), schedulers, state objects and the RNG
// states, so that loading one file continues training bit for bit. `snapshot_object()`
// saves one torch::nn::Module, torch::optim::Optimizer or Stateful.
//
// Guarantees (atomic_file.h): a file named by the template is always complete. A crash
// leaves the previous snapshots intact, plus at most a temp file `.<name>.tmp.<random>`,
// which the next start removes. n_retains deletes old snapshots only after the new one is
// durable, choosing by training progress (the template's {iteration}), never by mtime; files
// further along than the new one (another run's) are left alone.
//
// keep_best: retention also keeps the best N files by a reported value. The kept set is the
// newest n_retains by progress UNION the best N by the value; the file just written (the resume
// point) is always kept, even when it is the worst. The value is read from hook.observation()
// when the snapshot is taken (so whatever reports it, an evaluator, must run before: kSnapshot
// runs last) and written into the file as the metadata entry tth/retention_metric
// (snapshot_file.h), from which a restarted run reads it back, cheaply (the file's index and
// metadata only, once per file). A snapshot taken when the key was not reported, or not as a
// finite number, has no value and never counts among the best (warned once, naming the key);
// so does a file whose value cannot be read. Ties go to the older file (as a best-value
// trigger, which fires only on a strict improvement). Loading ignores the entry.
//
// Autoload (in the resume phase, before any extension's initialize): the newest snapshot by
// progress that verifies (zip structure, every CRC-32, format version) is loaded; torn or
// corrupt files are skipped with a warning naming them. A file that verifies but does not fit
// the training (other model) is an error, not skipped. No snapshot is not an error.
//
// Data-parallel jobs (HookOptions::process_group). Every rank registers the same snapshots with
// the same triggers (a trigger on a reported value reads an averaged one: average_across_ranks):
// saving is a collective; rank 0 alone evaluates `condition`, for every rank.
// - Saver rank (the default): the ranks meet (a collective that also checks that they are at
//   the same iteration), then only rank 0 writes the file, its own state (the model and
//   optimizer are the same on every rank). Every rank's autoload loads that file, so the
//   directory must be one the ranks share (or a copy of it on each machine). Per-rank state
//   such as a random generator's continues from the saver's.
// - Sharded: every rank writes its whole state as the part `<name>.shard-<r>-of-<w>` and waits
//   for it to be durable; once every rank has, the saver rank commits the manifest `<name>`
//   (the template's file, so autoload and n_retains see manifests only) with the same atomic
//   commit. A step whose manifest is missing (a rank died mid-snapshot) does not exist for
//   autoload. Each rank resumes from its own part: per-rank state continues exactly. Retention
//   (on the saver) deletes a manifest first, then its parts.
// - Autoload agrees: the saver rank proposes its newest valid file, every rank checks what it
//   would load (the same file, or its part of the same step), and all load it, or all pass on
//   to the next one. A file saved by a job of another world size is an error
//   (DistributedError), in both modes: snapshots are not re-sharded; resume with the same
//   number of ranks. So is a saver's file that another rank cannot find (the directory must be
//   shared in saver-rank mode).
// - Settings are compared when training starts: a rank whose filename, mode, saver rank,
//   n_retains, keep_best or autoload differ from rank 0's fails with DistributedError naming
//   both, on every rank.
// - snapshot_on_error: only the saver rank writes (no collective: the others may be gone); a
//   sharded snapshot writes nothing on error (a manifest needs every rank) and warns. (In any
//   run, a snapshot saves on error only once its resume phase completed: a failed autoload
//   leaves no file.)
// - Only rank 0 removes temp files left by an interrupted write, before the ranks meet.
// A rank that dies while the others snapshot makes their collective fail (the group's
// timeout at the latest) with DistributedError; restarting the job resumes from the last
// complete snapshot.
//
// Defaults: trigger {1, epoch}, priority kSnapshot (runs after every trigger of the
// iteration was evaluated). Thread safety: training thread only. Retention runs in the
// writer's `committed` callback, on the writer's thread for an asynchronous writer
// (async_writer.h): it uses only what save() captured (directory, path, value) and a cache of
// values guarded by a lock, never the hook, so training may go on meanwhile.
#pragma once

#include <torch/arg.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "tth/extension.h"
#include "tth/mode.h"
#include "tth/savefun.h"
#include "tth/stateful.h"
#include "tth/torch_fwd.h"
#include "tth/writer.h"

namespace tth {

class SnapshotFilename;

/// Which snapshots SnapshotOptions::keep_best keeps beside the newest: the best `n` by the
/// value reported under `key` in the iteration each snapshot was taken.
struct KeepBestOptions {
  KeepBestOptions(int n, std::string key) : n_(n), key_(std::move(key)) {}
  /// How many of the best files to keep; must be >= 1.
  TORCH_ARG(int, n);
  /// The reported key, e.g. "validation/main/accuracy"; must not be empty.
  TORCH_ARG(std::string, key);
  /// kMax keeps the largest values, kMin the smallest; kAuto means kMax when the key contains
  /// "accuracy", else kMin (as EarlyStoppingTrigger). Default kAuto.
  TORCH_ARG(Mode, mode) = Mode::kAuto;
};

/// Options of snapshot and snapshot_object.
struct SnapshotOptions {
  using Condition = std::function<bool(const TorchTrainerHook&)>;
  /// How the state becomes a file. Default torch_savefun(). Not together with writer().
  TORCH_ARG(SaveFunction, savefun);
  /// How a file of another format than LibTorch archive or npz is read back (autoload).
  /// Default: none needed for the built-in formats.
  TORCH_ARG(LoadFunction, loadfun);
  /// File name template, relative to the hook's out directory (or absolute); fmt fields
  /// {iteration} and {epoch} (specs: none, `d`, `0Nd`), {epoch_detail} and {elapsed_time}
  /// (none, `.Nf`): only specs whose names read back exactly, so that autoload and n_retains
  /// find the files. Unset (nullopt) means "snapshot_iter_{iteration}". (snapshot_object takes
  /// its filename as an argument, which replaces this.)
  TORCH_ARG(std::optional<std::string>, filename);
  /// Saves only when it returns true. Default: always.
  TORCH_ARG(Condition, condition);
  /// Schedules the commit. Default SimpleWriter(savefun). Not together with savefun().
  TORCH_ARG(std::shared_ptr<Writer>, writer);
  /// Also saves when training fails. Default false.
  TORCH_ARG(bool, snapshot_on_error) = false;
  /// Keeps only the newest N files of this template (-1: all). Default -1.
  TORCH_ARG(int, n_retains) = -1;
  /// Also keeps the best files by a reported value (see the header comment); requires
  /// n_retains >= 1, whose newest files stay as well. Default: none.
  TORCH_ARG(std::optional<KeepBestOptions>, keep_best);
  /// Loads the newest valid snapshot at the start. Default false.
  TORCH_ARG(bool, autoload) = false;
  /// In a data-parallel job (HookOptions::process_group): every rank saves its own state as a
  /// part, and the saver rank commits the manifest last (true); or the saver rank alone saves
  /// (false). See "Data-parallel jobs" in the header comment. Default false.
  TORCH_ARG(bool, sharded) = false;
  /// The rank that commits a sharded snapshot's manifest. A snapshot that is not sharded is
  /// saved by rank 0 (every rank resumes from its file, and the reports keep their state on
  /// rank 0), so it takes 0 only. Default 0.
  TORCH_ARG(int, saver_rank) = 0;
};

/// What snapshot_object saves: a module (or module holder), an optimizer, or any Stateful.
class SnapshotTarget {
 public:
  template <typename T>
  SnapshotTarget(std::shared_ptr<T> object) {  // NOLINT(google-explicit-constructor)
    if constexpr (std::is_base_of_v<torch::nn::Module, T>) {
      from_module(std::move(object));
    } else if constexpr (std::is_base_of_v<torch::optim::Optimizer, T>) {
      from_optimizer(std::move(object));
    } else {
      static_assert(std::is_base_of_v<Stateful, T>,
                    "snapshot_object saves a Module, an Optimizer or a Stateful");
      from_stateful(std::move(object));
    }
  }
  template <typename Contained>
  SnapshotTarget(const torch::nn::ModuleHolder<Contained>& module)  // NOLINT
      : SnapshotTarget(module.ptr()) {}

  StateDict state_dict() const { return save_(); }
  /// Checks `state` against state_dict() (StateError naming `what` and the key), then loads
  /// it strictly.
  void load_state_dict(const StateDict& state, const std::string& what) const {
    load_(state, what);
  }

 private:
  void from_module(std::shared_ptr<torch::nn::Module> module);
  void from_optimizer(std::shared_ptr<torch::optim::Optimizer> optimizer);
  void from_stateful(std::shared_ptr<Stateful> object);

  std::function<StateDict()> save_;
  std::function<void(const StateDict&, const std::string&)> load_;
};

/// The snapshot extension; see the header comment.
class Snapshot : public Extension {
 public:
  /// Saves `target`, or the whole training state when `target` is empty. Throws tth::Error
  /// naming the option for a bad filename template, savefun together with writer,
  /// n_retains == 0, or keep_best with n_retains -1, n < 1 or an empty key.
  Snapshot(std::optional<SnapshotTarget> target, SnapshotOptions options);
  ~Snapshot() override;

  void operator()(TorchTrainerHook& hook) override;
  void resume(TorchTrainerHook& hook) override;
  void on_error(TorchTrainerHook& hook, const std::exception_ptr& error) override;
  void finalize(TorchTrainerHook& hook) override;
  std::string default_name() const override;
  TriggerRef default_trigger() const override { return {1, epoch}; }
  int default_priority() const override { return priority::kSnapshot; }

  /// Saves now, regardless of trigger and condition; returns the path written.
  std::string save(TorchTrainerHook& hook);
  /// The file autoload loaded, if any.
  const std::optional<std::string>& loaded_path() const noexcept { return loaded_path_; }
  /// The last file this extension handed to its writer in this run, and at which iteration.
  struct Saved {
    std::string path;
    int64_t iteration;
  };
  const std::optional<Saved>& last_saved() const noexcept { return last_saved_; }

 private:
  class Retention;

  std::string directory(const TorchTrainerHook& hook) const;
  /// The keep_best value reported in the current iteration, if any (warns once if none).
  std::optional<double> reported_metric(const TorchTrainerHook& hook, const std::string& path);
  /// The state to save: metadata, then the target's or the hook's state.
  StateDict state_to_save(const TorchTrainerHook& hook, std::optional<double> metric) const;
  std::function<void()> committed_callback(const TorchTrainerHook& hook, const std::string& path,
                                           std::optional<double> metric) const;
  void save_sharded(TorchTrainerHook& hook, const std::string& path, std::optional<double> metric);
  /// The distributed autoload and settings check of resume (see the header comment).
  void check_settings(TorchTrainerHook& hook) const;
  void autoload_distributed(TorchTrainerHook& hook, const std::string& dir);
  void resume_phase(TorchTrainerHook& hook);
  /// Loads `state` into the target or the hook; StateError names `path`.
  void load(TorchTrainerHook& hook, StateDict state, const std::string& path);

  std::optional<SnapshotTarget> target_;
  std::shared_ptr<const SnapshotFilename> filename_;
  std::function<bool(const TorchTrainerHook&)> condition_;
  std::shared_ptr<Writer> writer_;
  LoadFunction loadfun_;
  bool snapshot_on_error_;
  bool autoload_;
  bool sharded_;
  int saver_rank_;
  int n_retains_;
  std::optional<KeepBestOptions> keep_best_;
  bool warned_sharded_error_ = false;
  bool resumed_ = false;  // the resume phase completed: on_error may save
  // Null without n_retains. Shared with the writer's `committed` callbacks, which may outlive
  // this extension (a writer can be shared) and run on another thread.
  std::shared_ptr<Retention> retention_;
  bool warned_no_metric_ = false;
  std::optional<std::string> loaded_path_;
  std::optional<Saved> last_saved_;
};

/// A snapshot of the whole training state.
std::shared_ptr<Snapshot> snapshot(SnapshotOptions options = {});
/// A snapshot of one object, saved as `filename` (a template, see SnapshotOptions::filename).
std::shared_ptr<Snapshot> snapshot_object(SnapshotTarget target, std::string filename,
                                          SnapshotOptions options = {});

}  // namespace tth
