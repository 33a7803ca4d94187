// Snapshot extensions: save the training state, or one object, so training can resume.
//
//   hook.extend(tth::snapshot());                                   // whole state, every epoch
//   hook.extend(tth::snapshot(tth::SnapshotOptions().autoload(true).n_retains(3)));
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
// Autoload (in the resume phase, before any extension's initialize): the newest snapshot by
// progress that verifies (zip structure, every CRC-32, format version) is loaded; torn or
// corrupt files are skipped with a warning naming them. A file that verifies but does not fit
// the training (other model) is an error, not skipped. No snapshot is not an error.
//
// Defaults: trigger {1, epoch}, priority kSnapshot (runs after every trigger of the
// iteration was evaluated). Thread safety: training thread only.
#pragma once

#include <torch/arg.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "tth/extension.h"
#include "tth/savefun.h"
#include "tth/stateful.h"
#include "tth/torch_fwd.h"
#include "tth/writer.h"

namespace tth {

class SnapshotFilename;

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
  /// Loads the newest valid snapshot at the start. Default false.
  TORCH_ARG(bool, autoload) = false;
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
  /// for a bad filename template, savefun together with writer, or n_retains == 0.
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

 private:
  std::string directory(const TorchTrainerHook& hook) const;
  void apply_retention(const TorchTrainerHook& hook, const std::string& written) const;

  std::optional<SnapshotTarget> target_;
  std::unique_ptr<SnapshotFilename> filename_;
  std::function<bool(const TorchTrainerHook&)> condition_;
  std::shared_ptr<Writer> writer_;
  LoadFunction loadfun_;
  bool snapshot_on_error_;
  int n_retains_;
  bool autoload_;
  std::optional<std::string> loaded_path_;
};

/// A snapshot of the whole training state.
std::shared_ptr<Snapshot> snapshot(SnapshotOptions options = {});
/// A snapshot of one object, saved as `filename` (a template, see SnapshotOptions::filename).
std::shared_ptr<Snapshot> snapshot_object(SnapshotTarget target, std::string filename,
                                          SnapshotOptions options = {});

}  // namespace tth
