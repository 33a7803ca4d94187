#include "tth/torch_trainer_hook.h"

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "module_state.h"
#include "tth/error.h"

namespace tth {

namespace {

// Epoch positions are compared with this tolerance so that 3 * (1/3) counts as 1.
constexpr double kEpochTolerance = 1e-9;

int64_t whole_epochs(double epoch_detail) {
  return static_cast<int64_t>(std::floor(epoch_detail + kEpochTolerance));
}

constexpr const char* kWhat = "TorchTrainerHook";

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

void TorchTrainerHook::add_model(const std::string& name, std::shared_ptr<torch::nn::Module> model) {
  if (!model) throw Error(fmt::format("add_model: model '{}' must not be null", name));
  if (name.empty()) throw Error("add_model: name must not be empty");
  if (started_) throw Error(fmt::format("add_model: training has started; add '{}' before", name));
  if (!models_.emplace(name, std::move(model)).second) {
    throw Error(fmt::format("add_model: a model named '{}' is already registered", name));
  }
}

void TorchTrainerHook::add_state(const std::string& name, std::shared_ptr<Stateful> object) {
  if (!object) throw Error(fmt::format("add_state: object '{}' must not be null", name));
  if (name.empty()) throw Error("add_state: name must not be empty");
  if (started_) throw Error(fmt::format("add_state: training has started; add '{}' before", name));
  if (!states_.emplace(name, std::move(object)).second) {
    throw Error(fmt::format("add_state: a state object named '{}' is already registered", name));
  }
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
  started_ = true;
  std::error_code error;
  std::filesystem::create_directories(out_, error);
  if (error) throw IOError("create output directory", out_, error.value());
  start_time_ = std::chrono::steady_clock::now();
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
  try {
    if (!started_) start();
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
  return state;
}

void TorchTrainerHook::load_state_dict(const StateDict& state, bool strict) {
  const StateDict expected = state_dict();
  check_compatible(expected, state, strict, kWhat);

  // Every check passed: apply. A component is loaded only when all its keys are present.
  auto complete = [&](const std::string& prefix, const StateDict& mine) {
    for (const auto& entry : mine) {
      if (!state.contains(prefix + "/" + entry.first)) return false;
    }
    return true;
  };
  if (state.contains("manager/iteration")) iteration_ = state.get_int("manager/iteration");
  if (state.contains("manager/elapsed_time")) {
    elapsed_before_ = state.get_double("manager/elapsed_time");
    start_time_ = std::chrono::steady_clock::now();
  }
  if (state.contains("manager/stop_triggered")) {
    stop_triggered_ = state.get_bool("manager/stop_triggered");
  }
  for (const auto& [prefix, component] : components()) {
    StateDict mine = expected.sub(prefix);
    if (complete(prefix, mine)) component->load_state_dict(state.sub(prefix));
  }
  for (const auto& [name, model] : models_) {
    const std::string prefix = "models/" + name;
    if (complete(prefix, expected.sub(prefix))) load_module_state(*model, state.sub(prefix));
  }
}

}  // namespace tth
