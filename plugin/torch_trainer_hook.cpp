#include "tth/torch_trainer_hook.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "check_argument.h"
#include "epoch_tolerance.h"
#include "posix_file.h"
#include "training_state.h"
#include "tth/atomic_file.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/process_group.h"
#include "tth/state_layout.h"

namespace tth {

namespace {

int64_t whole_epochs(double epoch_detail) {
  return static_cast<int64_t>(std::floor(epoch_detail + kEpochTolerance));
}

namespace layout = state_layout;

constexpr const char* kWhat = "TorchTrainerHook";
constexpr const char* kLoadWhat = "TorchTrainerHook::load_state_dict";

std::string describe_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "a non-standard exception";
  }
}

}  // namespace

TorchTrainerHook::TorchTrainerHook(HookOptions options)
    : iters_per_epoch_(options.iters_per_epoch()),
      out_(std::move(options.out())),
      process_group_(std::move(options.process_group())),
      stop_trigger_(options.stop_trigger().get()),
      state_(std::make_unique<TrainingState>()) {
  check_argument(iters_per_epoch_ > 0 && std::isfinite(iters_per_epoch_), "HookOptions",
                 "iters_per_epoch", "must be finite and > 0", iters_per_epoch_);
  check_argument(!out_.empty(), "HookOptions", "out", "must not be empty");
  if (process_group_) {
    rank_ = process_group_->rank();
    world_size_ = process_group_->world_size();
  }
  state_->add(std::string(layout::kManager),
              function_part([this] { return counters(); },
                            [this](const StateDict& state) { load_counters(state); }));
  if (stop_trigger_) state_->add(std::string(layout::kStopTrigger), stateful_part(*stop_trigger_));
}

TorchTrainerHook::~TorchTrainerHook() {
  if (!started_ || finalized_) return;
  try {
    finalize();
  } catch (...) {
    warn(fmt::format("{}: finalize failed during destruction: {}", kWhat,
                     describe_error(std::current_exception())));
  }
}

std::string TorchTrainerHook::extend(std::shared_ptr<Extension> extension,
                                     std::optional<std::string> name, TriggerRef trigger,
                                     std::optional<int> priority, bool call_before_training) {
  return extend(std::move(extension), ExtendOptions()
                                          .name(std::move(name))
                                          .trigger(std::move(trigger))
                                          .priority(priority)
                                          .call_before_training(call_before_training));
}

void TorchTrainerHook::check_registration_open(const char* who, const std::string& name) const {
  if (!started_) return;
  throw Error(
      fmt::format("{}: training has started (iteration {}); register '{}' before the "
                  "first iteration",
                  who, iteration_, name));
}

std::string TorchTrainerHook::extend(std::shared_ptr<Extension> extension,
                                     const ExtendOptions& options) {
  check_argument(extension != nullptr, "extend", "extension", "must not be null");
  const std::string base = options.name().value_or(extension->default_name());
  check_registration_open("extend", base);
  check_argument(!base.empty(), "extend", "name", "must not be empty");
  check_argument(base.find(layout::kSeparator) == std::string::npos, "extend", "name",
                 "must not contain '/'", fmt::format("'{}'", base));
  auto taken = [this](const std::string& candidate) {
    return std::any_of(entries_.begin(), entries_.end(),
                       [&](const Entry& e) { return e.name == candidate; });
  };
  std::string unique = base;
  for (int ordinal = 1; taken(unique); ++ordinal) unique = fmt::format("{}_{}", base, ordinal);

  const TriggerRef& chosen =
      options.trigger().is_set() ? options.trigger() : extension->default_trigger();
  Entry entry{unique, std::move(extension), chosen.get(), options.priority().value_or(0),
              options.call_before_training()};
  if (!options.priority()) entry.priority = entry.extension->default_priority();
  state_->add(layout::key(layout::kExtensions, unique), stateful_part(*entry.extension));
  if (entry.trigger) {
    state_->add(layout::key(layout::kExtensionTriggers, unique), stateful_part(*entry.trigger));
  }
  // Stable: equal priorities keep registration order.
  auto position =
      std::upper_bound(entries_.begin(), entries_.end(), entry.priority,
                       [](int value, const Entry& existing) { return value > existing.priority; });
  entries_.insert(position, std::move(entry));
  return unique;
}

void TorchTrainerHook::add_model(const std::string& name,
                                 std::shared_ptr<torch::nn::Module> model) {
  check_registration_open("add_model", name);
  state_->add_model(name, std::move(model));
}

void TorchTrainerHook::add_optimizer(const std::string& name,
                                     std::shared_ptr<torch::optim::Optimizer> optimizer) {
  check_registration_open("add_optimizer", name);
  state_->add_optimizer(name, std::move(optimizer));
}

void TorchTrainerHook::add_scheduler(const std::string& name,
                                     std::shared_ptr<torch::optim::LRScheduler> scheduler) {
  check_registration_open("add_scheduler", name);
  state_->add_scheduler(name, std::move(scheduler));
}

void TorchTrainerHook::add_state(const std::string& name, std::shared_ptr<Stateful> object) {
  check_registration_open("add_state", name);
  state_->add_state(name, std::move(object));
}

const std::map<std::string, std::shared_ptr<torch::nn::Module>>& TorchTrainerHook::models()
    const noexcept {
  return state_->models();
}

const std::map<std::string, std::shared_ptr<torch::optim::Optimizer>>&
TorchTrainerHook::optimizers() const noexcept {
  return state_->optimizers();
}

template <typename Hook>
void TorchTrainerHook::for_each_guarded(const char* phase, Hook&& hook) noexcept {
  for (Entry& entry : entries_) {
    try {
      hook(entry);
    } catch (...) {
      warn(fmt::format("{}: {} of extension '{}' failed: {}", kWhat, phase, entry.name,
                       describe_error(std::current_exception())));
    }
  }
}

void TorchTrainerHook::start() {
  if (started_) return;
  // Before anything runs, so that a refused run touches nothing in another run's directory,
  // not even from its error path (a snapshot_on_error).
  lock_output_directory();
  started_ = true;
  try {
    run_start_phases();
  } catch (...) {
    handle_error(std::current_exception());
    throw;
  }
}

void TorchTrainerHook::lock_output_directory() {
  std::error_code error;
  std::filesystem::create_directories(out_, error);
  if (error) throw IOError("create output directory", out_, error.value());
  try {
    take_lock(out_, "output directory", "out directory");
  } catch (const IOError& failure) {
    // Creating the lock file is the first write: an unwritable directory is reported here
    // rather than at the first snapshot.
    throw IOError(fmt::format("{}: cannot use output directory '{}': create or lock", kWhat, out_),
                  failure.path(), failure.error_number());
  }
}

void TorchTrainerHook::lock_directory(const std::string& directory) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) throw IOError("create directory", directory, error.value());
  take_lock(directory, "directory", "directory");
}

namespace {

// The one name of a directory, however it was spelled ("result", "./result/", a symlink).
std::filesystem::path canonical_of(const std::string& directory) {
  std::error_code error;
  std::filesystem::path canonical = std::filesystem::weakly_canonical(directory, error);
  if (error) canonical = std::filesystem::absolute(directory, error).lexically_normal();
  return canonical;
}

}  // namespace

void TorchTrainerHook::take_lock(const std::string& directory, const char* what,
                                 const char* advice) {
  const std::filesystem::path canonical = canonical_of(directory);
  for (const auto& held : locks_) {
    if (canonical_of(held->directory()) == canonical) return;
  }
  long holder = 0;
  // The ranks of a job share their directories, each with a lock of its own.
  const std::string name =
      rank_ == 0 ? std::string(kLockFileName) : fmt::format("{}.rank{}", kLockFileName, rank_);
  std::optional<DirectoryLock> lock = DirectoryLock::try_lock(directory, &holder, name);
  if (!lock) {
    throw Error(fmt::format(
        "{}: {} '{}' is in use by another run ({} holds '{}'); give each run its own {}", kWhat,
        what, directory, holder > 0 ? fmt::format("pid {}", holder) : std::string("a process"),
        DirectoryLock::lock_path(directory, name), advice));
  }
  locks_.push_back(std::make_unique<DirectoryLock>(std::move(*lock)));
}

void TorchTrainerHook::check_same_extensions() {
  std::string mine;
  for (const Entry& entry : entries_) {
    mine +=
        fmt::format("{}'{}' (priority {})", mine.empty() ? "" : ", ", entry.name, entry.priority);
  }
  const std::string reference = process_group_->broadcast_string(mine, 0);
  const std::vector<int64_t> same = process_group_->all_gather(reference == mine);
  std::vector<size_t> differing;
  for (size_t rank = 0; rank < same.size(); ++rank) {
    if (same[rank] == 0) differing.push_back(rank);
  }
  if (differing.empty()) return;
  throw DistributedError(fmt::format(
      "{}: the ranks registered different extensions: rank 0 has [{}], rank(s) {} have "
      "others{}; every rank must register the same extensions (names, order and priorities are "
      "compared; use the same triggers too): their collectives must match",
      kWhat, reference, fmt::join(differing, ", "),
      reference == mine ? std::string() : fmt::format(" (rank {} has [{}])", rank_, mine)));
}

void TorchTrainerHook::run_start_phases() {
  start_time_ = std::chrono::steady_clock::now();
  // Before any extension's collective: extensions that differ would pair the wrong ones.
  if (process_group_) check_same_extensions();
  for (Entry& entry : entries_) entry.extension->resume(*this);
  for (Entry& entry : entries_) {
    if (entry.trigger && entry.trigger->finished()) continue;
    entry.extension->initialize(*this);
  }
  if (iteration_ == 0) {
    for (Entry& entry : entries_) {
      if (!entry.call_before_training) continue;
      observation_.clear();
      ObservationScope scope(observation_);
      (*entry.extension)(*this);
    }
  }
}

void TorchTrainerHook::begin_iteration() {
  if (failed_ || finalized_) {
    throw Error(
        fmt::format("begin_iteration: training has already ended at iteration {}", iteration_));
  }
  if (in_iteration_) throw Error("begin_iteration: the previous iteration was not ended");
  start();
  try {
    observation_.clear();
    observation_scope_.emplace(observation_);
    in_iteration_ = true;
  } catch (...) {
    handle_error(std::current_exception());
    throw;
  }
}

void TorchTrainerHook::end_iteration() {
  if (!in_iteration_) throw Error("end_iteration: no iteration was begun");
  try {
    ++iteration_;
    run_triggered_extensions();
    in_iteration_ = false;
    observation_scope_.reset();
  } catch (...) {
    handle_error(std::current_exception());
    throw;
  }
}

void TorchTrainerHook::run_iteration(const std::function<void()>& step) {
  begin_iteration();
  try {
    step();
  } catch (...) {
    handle_error(std::current_exception());
    throw;
  }
  end_iteration();
}

void TorchTrainerHook::run_triggered_extensions() {
  std::vector<Entry*> deferred;
  for (Entry& entry : entries_) {
    if (!entry.trigger || !(*entry.trigger)(*this)) continue;
    if (entry.priority <= priority::kSnapshot) {
      deferred.push_back(&entry);
    } else {
      (*entry.extension)(*this);
    }
  }
  // The stop trigger sees this iteration's observation (an evaluator's values included), and
  // its decision is taken before a snapshot saves it.
  if (stop_trigger_ && !stop_triggered_) stop_triggered_ = (*stop_trigger_)(*this);
  for (Entry* entry : deferred) (*entry->extension)(*this);
}

void TorchTrainerHook::handle_error(const std::exception_ptr& error) noexcept {
  if (failed_) return;
  failed_ = true;
  in_iteration_ = false;
  observation_scope_.reset();
  for_each_guarded("on_error", [&](Entry& entry) { entry.extension->on_error(*this, error); });
  if (!finalized_) {
    finalized_ = true;
    for_each_guarded("finalize", [&](Entry& entry) { entry.extension->finalize(*this); });
    locks_.clear();  // after finalize: an asynchronous writer has finished its files
  }
}

bool TorchTrainerHook::done() {
  if (!failed_ && !finalized_) start();
  const bool result = stop_requested_ || failed_ || stop_triggered_;
  if (result && started_ && !finalized_) finalize();
  return result;
}

void TorchTrainerHook::finalize() {
  if (finalized_) return;
  finalized_ = true;
  observation_scope_.reset();
  std::exception_ptr first_error;
  for (Entry& entry : entries_) {
    try {
      entry.extension->finalize(*this);
    } catch (...) {
      if (!first_error) first_error = std::current_exception();
    }
  }
  locks_.clear();  // after finalize: an asynchronous writer has finished its files
  if (first_error) std::rethrow_exception(first_error);
}

int64_t TorchTrainerHook::epoch() const noexcept { return whole_epochs(epoch_detail()); }

double TorchTrainerHook::epoch_detail() const noexcept {
  return static_cast<double>(iteration_) / iters_per_epoch_;
}

double TorchTrainerHook::previous_epoch_detail() const noexcept {
  if (iteration_ == 0) return 0;
  return static_cast<double>(iteration_ - 1) / iters_per_epoch_;
}

bool TorchTrainerHook::is_new_epoch() const noexcept {
  return iteration_ > 0 && whole_epochs(previous_epoch_detail()) != epoch();
}

double TorchTrainerHook::elapsed_time() const {
  if (!started_) return elapsed_before_;
  std::chrono::duration<double> running = std::chrono::steady_clock::now() - start_time_;
  return elapsed_before_ + running.count();
}

std::optional<Duration> TorchTrainerHook::training_length() const {
  if (!stop_trigger_) return std::nullopt;
  return stop_trigger_->training_length();
}

std::shared_ptr<Extension> TorchTrainerHook::extension(const std::string& name) const {
  for (const Entry& entry : entries_) {
    if (entry.name == name) return entry.extension;
  }
  throw Error(fmt::format("extension: no extension named '{}' is registered", name));
}

std::vector<std::string> TorchTrainerHook::extension_names() const {
  std::vector<std::string> names;
  for (const Entry& entry : entries_) names.push_back(entry.name);
  return names;
}

StateDict TorchTrainerHook::counters() const {
  StateDict state;
  state.set_int(std::string(layout::kIteration), iteration_);
  state.set_int(std::string(layout::kEpoch), epoch());
  state.set_double(std::string(layout::kEpochDetail), epoch_detail());
  state.set_double(std::string(layout::kElapsedTime), elapsed_time());
  state.set_bool(std::string(layout::kStopTriggered), stop_triggered_);
  return state;
}

void TorchTrainerHook::load_counters(const StateDict& state) {
  // epoch and epoch_detail follow from the iteration; they are saved for readers of the file.
  const std::string iteration(layout::kIteration), elapsed(layout::kElapsedTime),
      stopped(layout::kStopTriggered);
  if (state.contains(iteration)) iteration_ = state.get_int(iteration);
  if (state.contains(elapsed)) {
    elapsed_before_ = state.get_double(elapsed);
    start_time_ = std::chrono::steady_clock::now();
  }
  if (state.contains(stopped)) {
    // A snapshot of the last iteration says "stopped"; that stands only if this run's stop
    // trigger agrees (its state is loaded by now: components with user code load first), so
    // training can be extended by resuming with a longer stop trigger.
    stop_triggered_ =
        state.get_bool(stopped) && stop_trigger_ && (stop_trigger_->finished() || length_reached());
  }
}

StateDict TorchTrainerHook::state_dict() const { return state_->save(); }

IncompatibleKeys TorchTrainerHook::load_state_dict(const StateDict& state, bool strict) {
  return state_->load(state, strict, kLoadWhat);
}

IncompatibleKeys TorchTrainerHook::load_state_dict(StateDict&& state, bool strict) {
  return state_->load(std::move(state), strict, kLoadWhat);
}

bool TorchTrainerHook::length_reached() const {
  const auto length = training_length();
  if (!length) return false;
  if (length->unit == Unit::kIteration) return static_cast<double>(iteration_) >= length->period;
  return epoch_detail() + kEpochTolerance >= length->period;
}

}  // namespace tth
