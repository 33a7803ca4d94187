#include "tth/snapshot.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <unordered_map>

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

// The metric a snapshot's metadata records, if it records a usable one. A file is hostile
// input: anything but a finite real or integer 0-d tensor counts as no value.
std::optional<double> recorded_metric(const StateDict& metadata) {
  if (!metadata.contains(kRetentionMetricKey)) return std::nullopt;
  const auto* tensor = std::get_if<at::Tensor>(&metadata.at(kRetentionMetricKey));
  if (tensor == nullptr || !tensor->defined() || tensor->dim() != 0 ||
      !(at::isFloatingType(tensor->scalar_type()) ||
        at::isIntegralType(tensor->scalar_type(), /*includeBool=*/false))) {
    return std::nullopt;
  }
  const double value = tensor->item<double>();
  if (!std::isfinite(value)) return std::nullopt;
  return value;
}

}  // namespace

// n_retains and keep_best, applied after each commit, possibly on a writer's thread: it reads
// only its own immutable configuration, its arguments and the cache, which mutex_ guards.
class Snapshot::Retention {
 public:
  struct Best {
    int n;
    std::string key;
    bool maximize;
  };

  Retention(std::shared_ptr<const SnapshotFilename> filename, int n_retains,
            std::optional<Best> best)
      : filename_(std::move(filename)), n_retains_(n_retains), best_(std::move(best)) {}

  const std::optional<Best>& best() const noexcept { return best_; }

  /// Deletes the files of the template in `directory` that are neither among the newest
  /// n_retains nor among the best, `written` (just committed, with `metric`) included.
  void apply(const std::string& directory, const std::string& written,
             std::optional<double> metric);

 private:
  // A file's metric, and what the file looked like when it was read: a file replaced since
  // (rewritten at the same progress) is read again.
  struct Cached {
    std::optional<double> metric;
    fs::file_time_type mtime;
    std::uintmax_t size = 0;
  };

  static bool identify(const std::string& path, Cached& file) {
    std::error_code error;
    file.mtime = fs::last_write_time(path, error);
    if (!error) file.size = fs::file_size(path, error);
    return !error;
  }

  void remember(const std::string& path, std::optional<double> metric) {
    Cached file;
    identify(path, file);
    file.metric = metric;
    cache_[path] = file;
  }

  // The metric recorded in `path`, from the cache or else from the file's metadata alone.
  std::optional<double> metric_of(const std::string& path) {
    Cached file;
    const bool identified = identify(path, file);
    const auto found = cache_.find(path);
    if (identified && found != cache_.end() && found->second.mtime == file.mtime &&
        found->second.size == file.size) {
      return found->second.metric;
    }
    try {
      file.metric = recorded_metric(read_snapshot_metadata(path));
    } catch (const std::exception& error) {
      warn(
          fmt::format("snapshot: keep_best cannot read the value of '{}', so it counts as having "
                      "none: {}",
                      path, error.what()));
      file.metric = std::nullopt;
    }
    cache_[path] = file;
    return file.metric;
  }

  const std::shared_ptr<const SnapshotFilename> filename_;
  const int n_retains_;
  const std::optional<Best> best_;
  std::mutex mutex_;
  std::unordered_map<std::string, Cached> cache_;  // by path; guarded by mutex_
};

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
      filename_(std::make_shared<const SnapshotFilename>(
          options.filename().value_or("snapshot_iter_{iteration}"))),
      condition_(std::move(options.condition())),
      writer_(std::move(options.writer())),
      loadfun_(std::move(options.loadfun())),
      snapshot_on_error_(options.snapshot_on_error()),
      autoload_(options.autoload()) {
  check_argument(!(writer_ && options.savefun()), "SnapshotOptions", "savefun and writer",
                 "must not both be set (a writer has its own savefun)");
  if (!writer_) {
    writer_ =
        std::make_shared<SimpleWriter>(options.savefun() ? options.savefun() : torch_savefun());
  }
  const int n_retains = options.n_retains();
  check_argument(n_retains >= 1 || n_retains == -1, "SnapshotOptions", "n_retains",
                 "must be >= 1 (or -1 for all)", n_retains);
  std::optional<Retention::Best> best;
  if (const auto& keep_best = options.keep_best()) {
    check_argument(n_retains >= 1, "SnapshotOptions", "keep_best",
                   "requires n_retains >= 1 (n_retains -1 keeps every file anyway)",
                   fmt::format("n_retains {}", n_retains));
    check_argument(keep_best->n() >= 1, "SnapshotOptions", "keep_best.n", "must be >= 1",
                   keep_best->n());
    check_argument(!keep_best->key().empty(), "SnapshotOptions", "keep_best.key",
                   "must not be empty");
    best = Retention::Best{keep_best->n(), keep_best->key(),
                           maximizes(keep_best->mode(), keep_best->key())};
  }
  check_argument(!(autoload_ || n_retains > 0) || filename_->has_static_directory(),
                 "SnapshotOptions", "filename",
                 "must have fields only in its last component with autoload or n_retains",
                 fmt::format("'{}'", filename_->pattern()));
  if (n_retains > 0) retention_ = std::make_shared<Retention>(filename_, n_retains, best);
}

Snapshot::~Snapshot() = default;

std::string Snapshot::default_name() const { return target_ ? "snapshot_object" : "snapshot"; }

std::string Snapshot::directory(const TorchTrainerHook& hook) const {
  return (fs::path(hook.out()) / filename_->directory()).lexically_normal().string();
}

std::optional<double> Snapshot::reported_metric(const TorchTrainerHook& hook,
                                                const std::string& path) {
  const std::string& key = retention_->best()->key;
  const auto found = hook.observation().find(key);
  std::string problem = "was not reported";
  if (found != hook.observation().end()) {
    try {
      const double value = found->second.value();
      if (std::isfinite(value)) return value;
      problem = fmt::format("was reported as {}", value);
    } catch (const std::exception& error) {  // a tensor of several elements, or a complex one
      problem = fmt::format("was reported as a value that is not a number ({})", error.what());
    }
  }
  if (!warned_no_metric_) {
    warned_no_metric_ = true;
    warn(fmt::format(
        "snapshot: keep_best key '{}' {} when '{}' was saved; a snapshot without a finite value "
        "never counts among the best (warned once)",
        key, problem, path));
  }
  return std::nullopt;
}

std::string Snapshot::save(TorchTrainerHook& hook) {
  const std::string path = (fs::path(hook.out()) / filename_->format(hook)).string();
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  state.set_int(kIterationKey, hook.iteration());
  std::optional<double> metric;
  if (retention_ && retention_->best()) {
    metric = reported_metric(hook, path);
    if (metric) state.set_double(kRetentionMetricKey, *metric);
  }
  for (auto& entry : target_ ? target_->state_dict() : hook.state_dict()) {
    state.set(entry.first, std::move(entry.second));
  }
  // The callback may run on a writer's thread while training goes on: everything it uses is
  // captured by value here, never read from the hook or from this extension later.
  std::function<void()> committed = [] {};
  if (retention_) {
    committed = [retention = retention_, directory = directory(hook), path, metric] {
      retention->apply(directory, path, metric);
    };
  }
  writer_->write(path, std::move(state), committed);
  last_saved_ = Saved{path, hook.iteration()};
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

void Snapshot::Retention::apply(const std::string& directory, const std::string& written,
                                std::optional<double> metric) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Only files up to the progress just written compete: a file from further along (another
  // run, or a damaged one autoload skipped) is not ours to judge, and the new file stays.
  const double current = filename_->progress_of(fs::path(written).filename().string()).value_or(0);
  std::vector<Candidate> files;  // the others, newest first
  std::error_code ignored_error;
  for (auto& candidate : candidates(*filename_, directory)) {
    if (candidate.progress <= current && !fs::equivalent(candidate.path, written, ignored_error)) {
      files.push_back(candidate);
    }
  }
  std::vector<bool> keep(files.size(), false);
  const size_t newest = static_cast<size_t>(n_retains_) - 1;  // the new file is one of the N
  for (size_t i = 0; i < std::min(newest, files.size()); ++i) keep[i] = true;
  if (best_) {
    // The best n among the new file (index files.size()) and the others that have a value.
    struct Ranked {
      double value;
      double progress;
      size_t index;
    };
    std::vector<Ranked> ranked;
    if (metric) ranked.push_back({*metric, current, files.size()});
    remember(written, metric);
    std::unordered_map<std::string, Cached> seen;
    for (size_t i = 0; i < files.size(); ++i) {
      if (auto value = metric_of(files[i].path)) ranked.push_back({*value, files[i].progress, i});
      seen.emplace(files[i].path, cache_.at(files[i].path));
    }
    seen.emplace(written, cache_.at(written));
    cache_ = std::move(seen);  // forget deleted and foreign files: the cache stays small
    const bool maximize = best_->maximize;
    std::stable_sort(ranked.begin(), ranked.end(), [&](const Ranked& a, const Ranked& b) {
      if (a.value != b.value) return maximize ? a.value > b.value : a.value < b.value;
      return a.progress < b.progress;  // a tie goes to the file that reached the value first
    });
    for (size_t r = 0; r < std::min(ranked.size(), static_cast<size_t>(best_->n)); ++r) {
      if (ranked[r].index < files.size()) keep[ranked[r].index] = true;
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (keep[i]) continue;
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
