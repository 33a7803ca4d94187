#include "tth/snapshot.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <filesystem>

#include "check_argument.h"
#include "optimizer_state.h"
#include "snapshot_filename.h"
#include "training_state.h"
#include "tth/atomic_file.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/snapshot_file.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace fs = std::filesystem;

namespace {

// snapshot_object's target as a state component, saved and loaded as the whole state is.
// The lambdas own the object, and the part that refers to it.
template <typename Object>
void bind(std::function<StateDict()>& save,
          std::function<void(const StateDict&, const std::string&)>& load,
          std::shared_ptr<Object> object, std::unique_ptr<StatePart> part) {
  std::shared_ptr<StatePart> shared(std::move(part));
  save = [object, shared] { return shared->save(); };
  load = [object, shared](const StateDict& state, const std::string& what) {
    load_part(*shared, state, /*strict=*/true, what);
  };
}

}  // namespace

void SnapshotTarget::from_module(std::shared_ptr<torch::nn::Module> module) {
  check_argument(module != nullptr, "snapshot_object", "module", "must not be null");
  bind(save_, load_, module, module_part(*module));
}

void SnapshotTarget::from_optimizer(std::shared_ptr<torch::optim::Optimizer> optimizer) {
  check_argument(optimizer != nullptr, "snapshot_object", "optimizer", "must not be null");
  check_supported_optimizer(*optimizer, "snapshot_object");
  bind(save_, load_, optimizer, optimizer_part(*optimizer));
}

void SnapshotTarget::from_stateful(std::shared_ptr<Stateful> object) {
  check_argument(object != nullptr, "snapshot_object", "object", "must not be null");
  bind(save_, load_, object, stateful_part(*object));
}

Snapshot::Snapshot(std::optional<SnapshotTarget> target, SnapshotOptions options)
    : target_(std::move(target)),
      filename_(std::make_unique<SnapshotFilename>(
          options.filename().value_or("snapshot_iter_{iteration}"))),
      condition_(std::move(options.condition())),
      writer_(std::move(options.writer())),
      loadfun_(std::move(options.loadfun())),
      snapshot_on_error_(options.snapshot_on_error()),
      n_retains_(options.n_retains()),
      autoload_(options.autoload()) {
  check_argument(!(writer_ && options.savefun()), "SnapshotOptions", "savefun and writer",
                 "must not both be set (a writer has its own savefun)");
  if (!writer_) {
    writer_ =
        std::make_shared<SimpleWriter>(options.savefun() ? options.savefun() : torch_savefun());
  }
  check_argument(n_retains_ >= 1 || n_retains_ == -1, "SnapshotOptions", "n_retains",
                 "must be >= 1 (or -1 for all)", n_retains_);
  check_argument(!(autoload_ || n_retains_ > 0) || filename_->has_static_directory(),
                 "SnapshotOptions", "filename",
                 "must have fields only in its last component with autoload or n_retains",
                 fmt::format("'{}'", filename_->pattern()));
}

Snapshot::~Snapshot() = default;

std::string Snapshot::default_name() const { return target_ ? "snapshot_object" : "snapshot"; }

std::string Snapshot::directory(const TorchTrainerHook& hook) const {
  return (fs::path(hook.out()) / filename_->directory()).lexically_normal().string();
}

std::string Snapshot::save(TorchTrainerHook& hook) {
  const std::string path = (fs::path(hook.out()) / filename_->format(hook)).string();
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  state.set_int(kIterationKey, hook.iteration());
  for (auto& entry : target_ ? target_->state_dict() : hook.state_dict()) {
    state.set(entry.first, std::move(entry.second));
  }
  writer_->write(path, std::move(state), [this, &hook, path] { apply_retention(hook, path); });
  return path;
}

void Snapshot::operator()(TorchTrainerHook& hook) {
  if (condition_ && !condition_(hook)) return;
  save(hook);
}

void Snapshot::on_error(TorchTrainerHook& hook, const std::exception_ptr& error) {
  (void)error;
  if (snapshot_on_error_) save(hook);
}

void Snapshot::finalize(TorchTrainerHook& hook) {
  (void)hook;
  writer_->finalize();
}

namespace {

struct Candidate {
  double progress;
  std::string path;
};

// Files of `filename` in `directory`, newest progress first.
std::vector<Candidate> candidates(const SnapshotFilename& filename, const std::string& directory) {
  std::vector<Candidate> found;
  std::error_code error;
  for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (is_temp_file_name(name) || !it->is_regular_file(error)) continue;
    if (auto progress = filename.progress_of(name))
      found.push_back({*progress, it->path().string()});
  }
  std::stable_sort(found.begin(), found.end(), [](const Candidate& a, const Candidate& b) {
    return a.progress != b.progress ? a.progress > b.progress : a.path > b.path;
  });
  return found;
}

}  // namespace

void Snapshot::apply_retention(const TorchTrainerHook& hook, const std::string& written) const {
  if (n_retains_ < 0) return;
  // Only files up to the progress just written compete: a file from further along (another
  // run, or a damaged one autoload skipped) is not ours to judge, and the new file stays.
  const double current = filename_->progress_of(fs::path(written).filename().string()).value_or(0);
  std::vector<Candidate> files;
  std::error_code ignored_error;
  for (auto& candidate : candidates(*filename_, directory(hook))) {
    if (candidate.progress <= current && !fs::equivalent(candidate.path, written, ignored_error)) {
      files.push_back(candidate);
    }
  }
  const size_t keep = static_cast<size_t>(n_retains_) - 1;  // the new file is one of the N
  for (size_t i = keep; i < files.size(); ++i) {
    std::error_code ignored;
    fs::remove(files[i].path, ignored);
  }
}

void Snapshot::resume(TorchTrainerHook& hook) {
  if (!filename_->has_static_directory()) return;
  const std::string dir = directory(hook);
  // Only the holder of a directory's lock may remove its temp files (atomic_file.h). The hook
  // holds out(); a subdirectory of it or a directory elsewhere is locked here, for the run.
  try {
    hook.lock_directory(dir);
  } catch (...) {
    // Another run writes there: this one must not, not even from its error path.
    snapshot_on_error_ = false;
    throw;
  }
  for (const std::string& removed : remove_temp_files(dir)) {
    warn(fmt::format("snapshot: removed '{}' left by an interrupted write", removed));
  }
  if (!autoload_) return;
  for (const Candidate& candidate : candidates(*filename_, dir)) {
    StateDict state;
    try {
      state = without_metadata(read_snapshot(candidate.path, loadfun_));
    } catch (const FormatError& error) {
      warn(fmt::format("snapshot: autoload skips '{}': {}", candidate.path, error.what()));
      continue;
    }
    try {
      if (target_) {
        target_->load_state_dict(state, "snapshot_object");
      } else {
        hook.load_state_dict(std::move(state));  // handed over: freed as it is applied
      }
    } catch (const StateError& error) {
      // The file is sound but does not fit this training: falling back would hide that.
      throw error.in_file("snapshot autoload", candidate.path);
    }
    loaded_path_ = candidate.path;
    warn(fmt::format("snapshot: resumed from '{}' (iteration {})", candidate.path,
                     hook.iteration()));
    return;
  }
}

std::shared_ptr<Snapshot> snapshot(SnapshotOptions options) {
  return std::make_shared<Snapshot>(std::nullopt, std::move(options));
}

std::shared_ptr<Snapshot> snapshot_object(SnapshotTarget target, std::string filename,
                                          SnapshotOptions options) {
  options.filename(std::move(filename));
  return std::make_shared<Snapshot>(std::move(target), std::move(options));
}

}  // namespace tth
