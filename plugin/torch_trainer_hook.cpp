#include "tth/torch_trainer_hook.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "epoch_tolerance.h"
#include "module_state.h"
#include "optimizer_state.h"
#include "rng_state.h"
#include "tth/error.h"

namespace tth {

namespace {

int64_t whole_epochs(double epoch_detail) {
  return static_cast<int64_t>(std::floor(epoch_detail + kEpochTolerance));
}

constexpr const char* kWhat = "TorchTrainerHook";

// LRScheduler keeps its step count protected and has no state_dict in LibTorch 1.13; a
// member pointer named through a derived class reaches it without changing the object.
struct SchedulerAccess : torch::optim::LRScheduler {
  static unsigned& step_count(torch::optim::LRScheduler& scheduler) {
    return scheduler.*(&SchedulerAccess::step_count_);
  }
};

bool has_prefix(const std::string& key, const std::string& prefix) {
  return key.compare(0, prefix.size(), prefix) == 0;
}

// `state` without the keys under `prefix`.
StateDict without(const StateDict& state, const std::string& prefix) {
  StateDict rest;
  for (const auto& [key, value] : state) {
    if (!has_prefix(key, prefix)) rest.set(key, value);
  }
  return rest;
}

}  // namespace

TorchTrainerHook::TorchTrainerHook(HookOptions options)
    : iters_per_epoch_(options.iters_per_epoch_),
      out_(std::move(options.out_)),
      stop_trigger_(options.stop_trigger_.get()) {
  if (!(iters_per_epoch_ > 0) || !std::isfinite(iters_per_epoch_)) {
    throw Error(fmt::format("HookOptions: iters_per_epoch must be > 0, got {}", iters_per_epoch_));
  }
  if (out_.empty()) throw Error("HookOptions: out must not be empty");
}

TorchTrainerHook::~TorchTrainerHook() {
  if (!started_ || finalized_) return;
  try {
    finalize();
  } catch (const std::exception& e) {
    std::cerr << "TorchTrainerHook: finalize failed during destruction: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "TorchTrainerHook: finalize failed during destruction\n";
  }
}

std::string TorchTrainerHook::extend(std::shared_ptr<Extension> extension,
                                     std::optional<std::string> name, TriggerRef trigger,
                                     std::optional<int> priority, bool call_before_training) {
  if (!extension) throw Error("extend: extension must not be null");
  if (started_) {
    throw Error(fmt::format("extend: training has started (iteration {}); register extension "
                            "'{}' before the first iteration",
                            iteration_, name.value_or(extension->default_name())));
  }
  std::string base = name ? *name : extension->default_name();
  if (base.empty()) throw Error("extend: name must not be empty");
  if (base.find('/') != std::string::npos) {
    throw Error(fmt::format("extend: name must not contain '/', got '{}'", base));
  }
  auto taken = [this](const std::string& candidate) {
    return std::any_of(entries_.begin(), entries_.end(),
                       [&](const Entry& e) { return e.name == candidate; });
  };
  std::string unique = base;
  for (int ordinal = 1; taken(unique); ++ordinal) unique = fmt::format("{}_{}", base, ordinal);

  TriggerRef chosen = trigger.is_set() ? trigger : extension->default_trigger();
  Entry entry{unique, std::move(extension), chosen.get(),
              priority.value_or(0), call_before_training};
  if (!priority) entry.priority = entry.extension->default_priority();
  // Stable: equal priorities keep registration order.
  auto position = std::upper_bound(
      entries_.begin(), entries_.end(), entry.priority,
      [](int value, const Entry& existing) { return value > existing.priority; });
  entries_.insert(position, std::move(entry));
  return unique;
}

template <typename Map, typename Object>
void TorchTrainerHook::add_named(const char* what, Map& map, const std::string& name,
                                 Object object) {
  if (!object) throw Error(fmt::format("{}: '{}' must not be null", what, name));
  if (name.empty()) throw Error(fmt::format("{}: name must not be empty", what));
  if (name.find('/') != std::string::npos) {
    throw Error(fmt::format("{}: name must not contain '/', got '{}'", what, name));
  }
  if (started_) throw Error(fmt::format("{}: training has started; add '{}' before", what, name));
  if (!map.emplace(name, std::move(object)).second) {
    throw Error(fmt::format("{}: '{}' is already registered", what, name));
  }
}

void TorchTrainerHook::add_model(const std::string& name, std::shared_ptr<torch::nn::Module> model) {
  add_named("add_model", models_, name, std::move(model));
}

void TorchTrainerHook::add_optimizer(const std::string& name,
                                     std::shared_ptr<torch::optim::Optimizer> optimizer) {
  add_named("add_optimizer", optimizers_, name, std::move(optimizer));
}

void TorchTrainerHook::add_scheduler(const std::string& name,
                                     std::shared_ptr<torch::optim::LRScheduler> scheduler) {
  add_named("add_scheduler", schedulers_, name, std::move(scheduler));
}

void TorchTrainerHook::add_state(const std::string& name, std::shared_ptr<Stateful> object) {
  add_named("add_state", states_, name, std::move(object));
}

template <typename Hook>
void TorchTrainerHook::for_each_guarded(const char* phase, Hook&& hook) noexcept {
  for (Entry& entry : entries_) {
    try {
      hook(entry);
    } catch (const std::exception& e) {
      std::cerr << "TorchTrainerHook: " << phase << " of extension '" << entry.name
                << "' failed: " << e.what() << '\n';
    } catch (...) {
      std::cerr << "TorchTrainerHook: " << phase << " of extension '" << entry.name
                << "' failed with a non-standard exception\n";
    }
  }
}

void TorchTrainerHook::start() {
  if (started_) return;
  started_ = true;
  try {
    run_start_phases();
  } catch (...) {
    handle_error(std::current_exception());
    throw;
  }
}

void TorchTrainerHook::run_start_phases() {
  std::error_code error;
  std::filesystem::create_directories(out_, error);
  if (error) throw IOError("create output directory", out_, error.value());
  start_time_ = std::chrono::steady_clock::now();
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
    throw Error(fmt::format("begin_iteration: training has already ended at iteration {}",
                            iteration_));
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
  throw Error(fmt::format("no extension named '{}' is registered", name));
}

std::vector<std::string> TorchTrainerHook::extension_names() const {
  std::vector<std::string> names;
  for (const Entry& entry : entries_) names.push_back(entry.name);
  return names;
}

std::vector<std::pair<std::string, Stateful*>> TorchTrainerHook::components() const {
  std::vector<std::pair<std::string, Stateful*>> result;
  if (stop_trigger_) result.emplace_back("stop_trigger", stop_trigger_.get());
  for (const Entry& entry : entries_) {
    result.emplace_back("extensions/" + entry.name, entry.extension.get());
    if (entry.trigger) result.emplace_back("extension_triggers/" + entry.name, entry.trigger.get());
  }
  for (const auto& [name, object] : states_) result.emplace_back("state/" + name, object.get());
  return result;
}

StateDict TorchTrainerHook::state_dict() const {
  StateDict state;
  state.set_int("manager/iteration", iteration_);
  state.set_int("manager/epoch", epoch());
  state.set_double("manager/epoch_detail", epoch_detail());
  state.set_double("manager/elapsed_time", elapsed_time());
  state.set_bool("manager/stop_triggered", stop_triggered_);
  for (const auto& [prefix, component] : components()) state.merge(prefix, component->state_dict());
  for (const auto& [name, model] : models_) state.merge("models/" + name, module_state_dict(*model));
  for (const auto& [name, optimizer] : optimizers_) {
    state.merge("optimizers/" + name, optimizer_state_dict(*optimizer));
  }
  for (const auto& [name, scheduler] : schedulers_) {
    state.set_int("schedulers/" + name + "/step_count", SchedulerAccess::step_count(*scheduler));
  }
  state.merge("rng", rng_state_dict());
  return state;
}

void TorchTrainerHook::load_state_dict(const StateDict& state, bool strict) {
  // Check everything before changing anything. Optimizer state has optional parts (a
  // parameter that never stepped has none), so it has its own check.
  const StateDict expected = state_dict();
  check_compatible(without(expected, "optimizers/"), without(state, "optimizers/"), strict, kWhat);
  for (const auto& [name, optimizer] : optimizers_) {
    check_optimizer_state(*optimizer, state.sub("optimizers/" + name), strict,
                          "optimizers/" + name + "/");
  }
  if (strict) {
    for (const auto& [key, value] : state) {
      if (!has_prefix(key, "optimizers/")) continue;
      const std::string name = key.substr(11, key.find('/', 11) - 11);
      if (!optimizers_.count(name)) {
        throw StateError(fmt::format("{}: unexpected key '{}': no optimizer named '{}' is "
                                     "registered (load non-strictly to ignore it)",
                                     kWhat, key, name));
      }
    }
  }

  // Every check passed. Applying can still fail (a user's load_state_dict, memory): then the
  // state before the load is put back, so a failed load changes nothing.
  StateDict backup;
  for (const auto& [key, value] : expected) {
    const auto* tensor = std::get_if<at::Tensor>(&value);
    backup.set(key, tensor != nullptr ? StateValue(tensor->clone()) : value);
  }
  try {
    apply_state(state, expected, strict);
  } catch (...) {
    try {
      apply_state(backup, expected, /*strict=*/true);
    } catch (const std::exception& error) {
      std::cerr << "TorchTrainerHook: restoring the state after a failed load failed too: "
                << error.what() << '\n';
    }
    throw;
  }
}

void TorchTrainerHook::apply_state(const StateDict& state, const StateDict& expected,
                                   bool strict) {
  // A component is loaded only when all its keys are present.
  auto complete = [&](const std::string& prefix) {
    for (const auto& entry : expected.sub(prefix)) {
      if (!state.contains(prefix + "/" + entry.first)) return false;
    }
    return true;
  };
  if (state.contains("manager/iteration")) iteration_ = state.get_int("manager/iteration");
  if (state.contains("manager/elapsed_time")) {
    elapsed_before_ = state.get_double("manager/elapsed_time");
    start_time_ = std::chrono::steady_clock::now();
  }
  for (const auto& [prefix, component] : components()) {
    if (complete(prefix)) component->load_state_dict(state.sub(prefix));
  }
  for (const auto& [name, model] : models_) {
    const std::string prefix = "models/" + name;
    if (complete(prefix)) load_module_state(*model, state.sub(prefix));
  }
  for (const auto& [name, optimizer] : optimizers_) {
    const std::string prefix = "optimizers/" + name;
    if (strict || state.contains(prefix + "/param_groups/0/lr")) {
      load_optimizer_state(*optimizer, state.sub(prefix));
    }
  }
  for (const auto& [name, scheduler] : schedulers_) {
    const std::string key = "schedulers/" + name + "/step_count";
    if (state.contains(key)) {
      SchedulerAccess::step_count(*scheduler) = static_cast<unsigned>(state.get_int(key));
    }
  }
  load_rng_state(state.sub("rng"));
  if (state.contains("manager/stop_triggered")) {
    // A snapshot of the last iteration says "stopped"; that stands only if this run's stop
    // trigger agrees, so training can be extended by resuming with a longer stop trigger.
    stop_triggered_ = state.get_bool("manager/stop_triggered") && stop_trigger_ &&
                      (stop_trigger_->finished() || length_reached());
  }
}

bool TorchTrainerHook::length_reached() const {
  const auto length = training_length();
  if (!length) return false;
  if (length->unit == Unit::kIteration) return static_cast<double>(iteration_) >= length->period;
  return epoch_detail() + kEpochTolerance >= length->period;
}

}  // namespace tth
