#include "tth/snapshot.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
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
#include "tth/process_group.h"
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

// The part of a sharded snapshot that `rank` writes.
std::string shard_path(const std::string& path, int rank, int world_size) {
  return fmt::format("{}.shard-{}-of-{}", path, rank, world_size);
}

// Deletes the parts of the sharded snapshot whose manifest is `manifest`.
void remove_parts(const std::string& manifest) {
  const fs::path path(manifest);
  const std::string prefix = path.filename().string() + ".shard-";
  std::error_code error;
  for (fs::directory_iterator it(path.parent_path(), error), end; !error && it != end;
       it.increment(error)) {
    if (it->path().filename().string().rfind(prefix, 0) != 0) continue;
    std::error_code ignored;
    fs::remove(it->path(), ignored);
  }
}

// Deletes the parts in `directory` of steps before `progress` that have no manifest: their
// job died before every rank wrote its part (or before the manifest was committed).
void remove_orphan_parts(const SnapshotFilename& filename, const std::string& directory,
                         double progress) {
  std::error_code error;
  for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    const auto suffix = name.rfind(".shard-");
    if (suffix == std::string::npos || is_temp_file_name(name)) continue;
    const std::string manifest = name.substr(0, suffix);
    const auto step = filename.progress_of(manifest);
    std::error_code ignored;
    if (!step || *step >= progress || fs::exists(fs::path(directory) / manifest, ignored)) continue;
    fs::remove(it->path(), ignored);
  }
}

// The world size a snapshot records: 1 when it records none (a single process saved it); -1
// when the entry is not a usable integer (a hostile file).
int64_t recorded_world_size(const StateDict& state) {
  if (!state.contains(kWorldSizeKey)) return 1;
  try {
    const int64_t world_size = state.get_int(kWorldSizeKey);
    return world_size >= 1 ? world_size : -1;
  } catch (const std::exception&) {
    return -1;
  }
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
            std::optional<Best> best, bool sharded)
      : filename_(std::move(filename)),
        n_retains_(n_retains),
        best_(std::move(best)),
        sharded_(sharded) {}

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
  const bool sharded_;  // a file deleted is a manifest: its parts go after it
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
      autoload_(options.autoload()),
      sharded_(options.sharded()),
      saver_rank_(options.saver_rank()),
      n_retains_(options.n_retains()),
      keep_best_(options.keep_best()) {
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
  // The reports act on rank 0: a file that every rank resumes from must hold rank 0's state.
  check_argument(saver_rank_ == 0 || (sharded_ && saver_rank_ > 0), "SnapshotOptions", "saver_rank",
                 sharded_ ? "must be >= 0"
                          : "must be 0 unless sharded (every rank resumes from the saver's "
                            "state, and the reports keep theirs on rank 0)",
                 saver_rank_);
  if (n_retains > 0) {
    retention_ = std::make_shared<Retention>(filename_, n_retains, best, sharded_);
  }
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

StateDict Snapshot::state_to_save(const TorchTrainerHook& hook,
                                  std::optional<double> metric) const {
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  state.set_int(kIterationKey, hook.iteration());
  if (metric) state.set_double(kRetentionMetricKey, *metric);
  if (hook.process_group()) state.set_int(kWorldSizeKey, hook.world_size());
  for (auto& entry : target_ ? target_->state_dict() : hook.state_dict()) {
    state.set(entry.first, std::move(entry.second));
  }
  return state;
}

std::function<void()> Snapshot::committed_callback(const TorchTrainerHook& hook,
                                                   const std::string& path,
                                                   std::optional<double> metric) const {
  // The callback may run on a writer's thread while training goes on: everything it uses is
  // captured by value here, never read from the hook or from this extension later.
  if (!retention_) return [] {};
  return [retention = retention_, directory = directory(hook), path, metric] {
    retention->apply(directory, path, metric);
  };
}

std::string Snapshot::save(TorchTrainerHook& hook) {
  std::string path = (fs::path(hook.out()) / filename_->format(hook)).string();
  std::optional<double> metric;
  if (retention_ && retention_->best()) metric = reported_metric(hook, path);
  if (const auto& group = hook.process_group()) {
    // The ranks meet here; a rank at another iteration took another path through training.
    const std::vector<int64_t> iterations = group->all_gather(hook.iteration());
    if (std::any_of(iterations.begin(), iterations.end(),
                    [&](int64_t iteration) { return iteration != hook.iteration(); })) {
      throw DistributedError(fmt::format(
          "snapshot '{}': the ranks are at different iterations ({}); every rank must take the "
          "same snapshots at the same iterations",
          path, fmt::join(iterations, ", ")));
    }
    // One name for every rank's part: a field such as {elapsed_time} differs between ranks.
    if (sharded_) path = group->broadcast_string(path, saver_rank_);
    if (sharded_) {
      save_sharded(hook, path, metric);
    } else if (hook.rank() == saver_rank_) {
      writer_->write(path, state_to_save(hook, metric), committed_callback(hook, path, metric));
    }
  } else {
    writer_->write(path, state_to_save(hook, metric), committed_callback(hook, path, metric));
  }
  last_saved_ = Saved{path, hook.iteration()};
  return path;
}

void Snapshot::save_sharded(TorchTrainerHook& hook, const std::string& path,
                            std::optional<double> metric) {
  ProcessGroup& group = *hook.process_group();
  std::exception_ptr failure;
  try {
    StateDict part = state_to_save(hook, metric);
    part.set_int(kRankKey, hook.rank());
    writer_->write(shard_path(path, hook.rank(), hook.world_size()), std::move(part), [] {});
    writer_->finalize();  // durable before the manifest may name it
  } catch (...) {
    failure = std::current_exception();
  }
  const bool all_written = group.all_true(!failure);
  if (failure) std::rethrow_exception(failure);
  if (!all_written) {
    throw DistributedError(fmt::format(
        "snapshot '{}': another rank could not write its part (see its error), so the manifest "
        "was not committed",
        path));
  }
  if (hook.rank() != saver_rank_) return;
  StateDict manifest;
  manifest.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  manifest.set_int(kIterationKey, hook.iteration());
  manifest.set_int(kWorldSizeKey, hook.world_size());
  if (metric) manifest.set_double(kRetentionMetricKey, *metric);
  writer_->write(path, std::move(manifest), committed_callback(hook, path, metric));
}

void Snapshot::operator()(TorchTrainerHook& hook) {
  const auto& group = hook.process_group();
  if (!group) {
    if (!condition_ || condition_(hook)) save(hook);
    return;
  }
  // Saving is a collective: rank 0 alone evaluates the condition, and every rank follows it.
  // Its failure is shared too, so that no rank is left waiting for the others.
  enum : int64_t { kSkip = 0, kTake = 1, kFailed = 2 };
  int64_t decision = kTake;
  std::exception_ptr failure;
  if (hook.rank() == 0 && condition_) {
    try {
      decision = condition_(hook) ? kTake : kSkip;
    } catch (...) {
      failure = std::current_exception();
      decision = kFailed;
    }
  }
  decision = group->all_gather(decision)[0];
  if (failure) std::rethrow_exception(failure);
  if (decision == kFailed) {
    throw DistributedError("snapshot: rank 0's condition failed (see its error)");
  }
  if (decision == kTake) save(hook);
}

void Snapshot::on_error(TorchTrainerHook& hook, const std::exception_ptr& error) {
  (void)error;
  // Not before this extension's resume phase completed: the state is not the training's yet
  // (a failed autoload, another world size, mismatched settings), and must not replace a file.
  if (!snapshot_on_error_ || !resumed_) return;
  if (!hook.process_group()) {
    save(hook);
    return;
  }
  // No collective here: the other ranks may have failed or gone.
  const std::string path = (fs::path(hook.out()) / filename_->format(hook)).string();
  if (sharded_) {
    if (!warned_sharded_error_) {
      warned_sharded_error_ = true;
      warn(fmt::format(
          "snapshot: snapshot_on_error saves nothing for the sharded snapshot '{}': its "
          "manifest needs every rank",
          path));
    }
    return;
  }
  if (hook.rank() != saver_rank_) return;
  writer_->write(path, state_to_save(hook, std::nullopt), committed_callback(hook, path, {}));
  last_saved_ = Saved{path, hook.iteration()};
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
    fs::remove(files[i].path, ignored);  // the manifest first: without it the parts are unused
    if (sharded_) remove_parts(files[i].path);
  }
  if (sharded_) remove_orphan_parts(*filename_, directory, current);
}

void Snapshot::load(TorchTrainerHook& hook, StateDict state, const std::string& path) {
  try {
    if (target_) {
      target_->load_state_dict(state, "snapshot_object");
    } else {
      hook.load_state_dict(std::move(state));  // handed over: freed as it is applied
    }
  } catch (const StateError& error) {
    // The file is sound but does not fit this training: falling back would hide that.
    throw error.in_file("snapshot autoload", path);
  }
}

void Snapshot::resume(TorchTrainerHook& hook) {
  resume_phase(hook);
  resumed_ = true;
}

void Snapshot::resume_phase(TorchTrainerHook& hook) {
  const bool distributed = hook.process_group() != nullptr;
  if (!filename_->has_static_directory()) {
    if (distributed) check_settings(hook);
    return;
  }
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
  // In a job, rank 0 alone, before the ranks meet in check_settings: no rank writes before.
  if (hook.rank() == 0) {
    for (const std::string& removed : remove_temp_files(dir)) {
      warn(fmt::format("snapshot: removed '{}' left by an interrupted write", removed));
    }
  }
  if (distributed) check_settings(hook);
  if (!autoload_) return;
  if (distributed) {
    autoload_distributed(hook, dir);
    return;
  }
  for (const Candidate& candidate : candidates(*filename_, dir)) {
    StateDict state;
    try {
      state = read_snapshot(candidate.path, loadfun_);
    } catch (const FormatError& error) {
      warn(fmt::format("snapshot: autoload skips '{}': {}", candidate.path, error.what()));
      continue;
    }
    if (const int64_t world_size = recorded_world_size(state); world_size < 1) {
      warn(fmt::format("snapshot: autoload skips '{}': key '{}' is unusable", candidate.path,
                       kWorldSizeKey));
      continue;
    } else if (world_size != 1) {
      throw DistributedError(fmt::format(
          "snapshot autoload: '{}' was saved by a data-parallel job of {} ranks; resume it with "
          "as many ranks (HookOptions::process_group)",
          candidate.path, world_size));
    }
    load(hook, without_metadata(state), candidate.path);
    loaded_path_ = candidate.path;
    warn(fmt::format("snapshot: resumed from '{}' (iteration {})", candidate.path,
                     hook.iteration()));
    return;
  }
}

void Snapshot::check_settings(TorchTrainerHook& hook) const {
  ProcessGroup& group = *hook.process_group();
  const std::string mine = fmt::format(
      "filename '{}', {}, saver_rank {}, n_retains {}, keep_best {}, autoload {}",
      filename_->pattern(), sharded_ ? "sharded" : "saver rank", saver_rank_, n_retains_,
      keep_best_ ? fmt::format("{} of '{}' ({})", keep_best_->n(), keep_best_->key(),
                               maximizes(keep_best_->mode(), keep_best_->key()) ? "max" : "min")
                 : std::string("none"),
      autoload_);
  const std::string reference = group.broadcast_string(mine, 0);
  const std::vector<int64_t> same = group.all_gather(reference == mine ? 1 : 0);
  std::vector<int> differing;
  for (size_t rank = 0; rank < same.size(); ++rank) {
    if (same[rank] == 0) differing.push_back(static_cast<int>(rank));
  }
  if (!differing.empty()) {
    throw DistributedError(fmt::format(
        "snapshot: the ranks' settings differ: rank 0 has ({}), rank(s) {} have others{}; "
        "every rank must register the same snapshots",
        reference, fmt::join(differing, ", "),
        reference == mine ? std::string() : fmt::format(" (rank {} has {})", hook.rank(), mine)));
  }
  check_argument(saver_rank_ < hook.world_size(), "SnapshotOptions", "saver_rank",
                 fmt::format("must be a rank of the job, in [0, {})", hook.world_size()),
                 saver_rank_);
}

namespace {

// What a rank found when it read the file it would load (autoload_distributed).
enum class Readback : int64_t {
  kReadable = 0,
  kDamaged = 1,  // torn, corrupt or not this step's part: skipped by every rank
  // Not there: the saver's file on a rank that does not share its directory, or a part under a
  // committed manifest (parts go only after their manifest). Falling back would start afresh,
  // and retention would then delete the real snapshots: an error.
  kMissing = 2,
};

// What a rank read must be the step the saver proposed: a sharded part replaced since its
// manifest was committed (a template without {iteration}), or a stale copy of the saver's file
// on another machine, belongs to another step. A part must also be this rank's.
std::optional<std::string> step_mismatch(const StateDict& read, int64_t iteration,
                                         std::optional<int> rank) {
  try {
    if (read.get_int(kIterationKey) != iteration) {
      return fmt::format("it holds iteration {}, the saver's {}", read.get_int(kIterationKey),
                         iteration);
    }
    if (rank && read.get_int(kRankKey) != *rank) {
      return fmt::format("it is rank {}'s part", read.get_int(kRankKey));
    }
  } catch (const std::exception& error) {
    return fmt::format("its metadata are unusable: {}", error.what());
  }
  return std::nullopt;
}

}  // namespace

void Snapshot::autoload_distributed(TorchTrainerHook& hook, const std::string& dir) {
  ProcessGroup& group = *hook.process_group();
  const bool saver = hook.rank() == saver_rank_;
  const int world_size = hook.world_size();
  std::vector<Candidate> files;
  if (saver) files = candidates(*filename_, dir);
  size_t next = 0;
  // Each round, the saver proposes its newest file that reads back, and every rank checks what
  // it would load: all load it, or all pass on to the next.
  while (true) {
    std::string proposal;
    StateDict state;  // the saver's read of the file (the manifest, when sharded)
    int64_t recorded = 0, iteration = 0;
    while (saver && next < files.size() && proposal.empty()) {
      const std::string& path = files[next++].path;
      try {
        state = read_snapshot(path, loadfun_);
        recorded = recorded_world_size(state);
        iteration = state.contains(kIterationKey) ? state.get_int(kIterationKey) : -1;
        if (recorded < 1)
          throw FormatError(fmt::format("'{}': key '{}' is unusable", path, kWorldSizeKey));
        proposal = path;
      } catch (const Error& error) {  // damaged, or unreadable (an IOError)
        warn(fmt::format("snapshot: autoload skips '{}': {}", path, error.what()));
      }
    }
    proposal = group.broadcast_string(proposal, saver_rank_);
    if (proposal.empty()) return;  // nothing to resume from, on every rank
    // The file's world size and step, as the saver read them, before any rank reads its part:
    // a part of another world size has another name, and would look merely missing.
    recorded = group.all_gather(saver ? recorded : 0)[static_cast<size_t>(saver_rank_)];
    iteration = group.all_gather(saver ? iteration : 0)[static_cast<size_t>(saver_rank_)];
    if (recorded != world_size) {
      throw DistributedError(fmt::format(
          "snapshot autoload: '{}' was saved by a job of {} ranks, and this job has {}: resume "
          "with {} ranks (snapshots are not re-sharded)",
          proposal, recorded, world_size, recorded));
    }
    // What this rank loads: the file itself, or its part of it.
    const std::string file = sharded_ ? shard_path(proposal, hook.rank(), world_size) : proposal;
    Readback readback = Readback::kReadable;
    try {
      if (!saver || sharded_) state = read_snapshot(file, loadfun_);
      const std::optional<int> rank = sharded_ ? std::optional<int>(hook.rank()) : std::nullopt;
      if (auto problem = step_mismatch(state, iteration, rank)) {
        throw FormatError(fmt::format("'{}': {}", file, *problem));
      }
    } catch (const IOError& error) {
      readback = error.error_number() == ENOENT ? Readback::kMissing : Readback::kDamaged;
      warn(fmt::format("snapshot: rank {} cannot read '{}': {}", hook.rank(), file, error.what()));
    } catch (const Error& error) {
      readback = Readback::kDamaged;
      warn(fmt::format("snapshot: rank {} cannot read '{}': {}", hook.rank(), file, error.what()));
    }
    const std::vector<int64_t> found = group.all_gather(static_cast<int64_t>(readback));
    std::vector<int> missing, damaged;
    for (size_t rank = 0; rank < found.size(); ++rank) {
      if (found[rank] == static_cast<int64_t>(Readback::kMissing)) missing.push_back(rank);
      if (found[rank] == static_cast<int64_t>(Readback::kDamaged)) damaged.push_back(rank);
    }
    if (!missing.empty() && sharded_) {
      throw DistributedError(fmt::format(
          "snapshot autoload: rank(s) {} cannot find their part of '{}' (.shard-<rank>-of-{}), "
          "whose manifest the saver rank {} committed: restore the part, or remove the manifest "
          "to resume from an older snapshot",
          fmt::join(missing, ", "), proposal, world_size, saver_rank_));
    }
    if (!missing.empty()) {
      throw DistributedError(fmt::format(
          "snapshot autoload: rank(s) {} cannot find '{}', which the saver rank {} reads: every "
          "rank loads the saver's file, so the ranks must share its directory (or use "
          "SnapshotOptions::sharded)",
          fmt::join(missing, ", "), proposal, saver_rank_));
    }
    if (!damaged.empty()) {
      if (saver) {
        warn(fmt::format("snapshot: autoload skips '{}': rank(s) {} cannot read {}", proposal,
                         fmt::join(damaged, ", "), sharded_ ? "their part" : "it"));
      }
      continue;
    }
    std::exception_ptr failure;
    try {
      load(hook, without_metadata(state), file);
    } catch (...) {
      failure = std::current_exception();
    }
    if (!group.all_true(!failure)) {
      if (failure) std::rethrow_exception(failure);
      throw DistributedError(fmt::format(
          "snapshot autoload: another rank could not load '{}' (see its error)", proposal));
    }
    loaded_path_ = proposal;
    warn(fmt::format("snapshot: resumed from '{}' (iteration {})", file, hook.iteration()));
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
