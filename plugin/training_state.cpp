#include "training_state.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include "check_argument.h"
#include "module_state.h"
#include "optimizer_state.h"
#include "rng_state.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/state_layout.h"

namespace tth {

namespace layout = state_layout;

namespace {

// LRScheduler keeps its step count protected and has no state_dict in LibTorch 1.13; a
// member pointer named through a derived class reaches it without changing the object.
struct SchedulerAccess : torch::optim::LRScheduler {
  static unsigned& step_count(torch::optim::LRScheduler& scheduler) {
    return scheduler.*(&SchedulerAccess::step_count_);
  }
};

class StatefulPart final : public StatePart {
 public:
  explicit StatefulPart(std::shared_ptr<Stateful> object) : object_(std::move(object)) {}
  StateDict save() const override { return object_->state_dict(); }
  void load(const StateDict& given, bool strict) override {
    // Its load_state_dict expects the whole state: a partial one keeps the current state.
    if (!strict) {
      for (const auto& entry : object_->state_dict()) {
        if (!given.contains(entry.first)) return;
      }
    }
    object_->load_state_dict(given);
  }

 private:
  std::shared_ptr<Stateful> object_;
};

class ModulePart final : public StatePart {
 public:
  explicit ModulePart(std::shared_ptr<torch::nn::Module> module) : module_(std::move(module)) {}
  StateDict save() const override { return module_state_dict(*module_); }
  void load(const StateDict& given, bool) override { load_module_state(*module_, given); }

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

class OptimizerPart final : public StatePart {
 public:
  explicit OptimizerPart(std::shared_ptr<torch::optim::Optimizer> optimizer)
      : optimizer_(std::move(optimizer)) {}
  StateDict save() const override { return optimizer_state_dict(*optimizer_); }
  void check(const StateDict& given, bool strict, IncompatibleKeys& report) const override {
    check_optimizer_state(*optimizer_, given, strict, report);
  }
  void load(const StateDict& given, bool strict) override {
    load_optimizer_state(*optimizer_, given, strict);
  }

 private:
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
};

class FunctionPart final : public StatePart {
 public:
  FunctionPart(std::function<StateDict()> save, std::function<void(const StateDict&)> load)
      : save_(std::move(save)), load_(std::move(load)) {}
  StateDict save() const override { return save_(); }
  void load(const StateDict& given, bool) override { load_(given); }

 private:
  std::function<StateDict()> save_;
  std::function<void(const StateDict&)> load_;
};

bool under(const std::string& key, const std::string& prefix) {
  return key.size() > prefix.size() && key.compare(0, prefix.size(), prefix) == 0 &&
         key[prefix.size()] == layout::kSeparator;
}

// A StateError from a component, its key made whole and the operation named.
StateError in_context(const StateError& error, const std::string& prefix, const std::string& what) {
  return StateError(what, prefix.empty() ? error.key() : layout::key(prefix, error.key()),
                    error.problem(), error.file());
}

void prefix_keys(std::vector<std::string>& keys, const std::string& prefix) {
  for (std::string& key : keys) key = layout::key(prefix, key);
}

void append(std::vector<std::string>& to, const std::vector<std::string>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

// The state with every tensor copied, to put back after a failed load.
StateDict deep_copy(const StateDict& state) {
  StateDict copy;
  for (const auto& [key, value] : state) {
    const auto* tensor = std::get_if<at::Tensor>(&value);
    copy.set(key, tensor != nullptr ? StateValue(tensor->clone()) : value);
  }
  return copy;
}

}  // namespace

void warn_left_out(const IncompatibleKeys& report, const std::string& what) {
  if (report.empty()) return;
  warn(
      fmt::format("{}: non-strict load kept the current values of {} missing key(s) [{}] and "
                  "ignored {} unexpected key(s) [{}]",
                  what, report.missing_keys.size(), fmt::join(report.missing_keys, ", "),
                  report.unexpected_keys.size(), fmt::join(report.unexpected_keys, ", ")));
}

void StatePart::check(const StateDict& given, bool strict, IncompatibleKeys& report) const {
  const IncompatibleKeys left_out = check_compatible(save(), given, strict, "");
  append(report.missing_keys, left_out.missing_keys);
  append(report.unexpected_keys, left_out.unexpected_keys);
}

std::unique_ptr<StatePart> stateful_part(std::shared_ptr<Stateful> object) {
  return std::make_unique<StatefulPart>(std::move(object));
}

std::unique_ptr<StatePart> module_part(std::shared_ptr<torch::nn::Module> module) {
  return std::make_unique<ModulePart>(std::move(module));
}

std::unique_ptr<StatePart> optimizer_part(std::shared_ptr<torch::optim::Optimizer> optimizer) {
  return std::make_unique<OptimizerPart>(std::move(optimizer));
}

std::unique_ptr<StatePart> function_part(std::function<StateDict()> save,
                                         std::function<void(const StateDict&)> load) {
  return std::make_unique<FunctionPart>(std::move(save), std::move(load));
}

IncompatibleKeys load_part(StatePart& part, const StateDict& given, bool strict,
                           const std::string& what) {
  IncompatibleKeys report;
  try {
    part.check(given, strict, report);
  } catch (const StateError& error) {
    throw in_context(error, "", what);
  }
  const StateDict backup = deep_copy(part.save());
  try {
    part.load(given, strict);
  } catch (...) {
    try {
      part.load(backup, /*strict=*/true);
    } catch (const std::exception& error) {
      warn(fmt::format("{}: restoring the state after a failed load failed too: {}", what,
                       error.what()));
    }
    throw;
  }
  warn_left_out(report, what);
  return report;
}

TrainingState::TrainingState() = default;
TrainingState::~TrainingState() = default;

void TrainingState::add(std::string prefix, std::unique_ptr<StatePart> part) {
  components_.push_back({std::move(prefix), std::move(part)});
}

void TrainingState::add_named(const char* who, std::string_view section, const std::string& name,
                              bool present, std::unique_ptr<StatePart> part) {
  check_argument(!name.empty(), who, "name", "must not be empty");
  check_argument(name.find(layout::kSeparator) == std::string::npos, who, "name",
                 "must not contain '/'", fmt::format("'{}'", name));
  check_argument(!present, who, "name", "must be unique", fmt::format("'{}' again", name));
  add(layout::key(section, name), std::move(part));
}

void TrainingState::add_model(const std::string& name, std::shared_ptr<torch::nn::Module> model) {
  check_argument(model != nullptr, "add_model", "model", "must not be null");
  add_named("add_model", layout::kModels, name, models_.count(name) != 0, module_part(model));
  models_.emplace(name, std::move(model));
}

void TrainingState::add_optimizer(const std::string& name,
                                  std::shared_ptr<torch::optim::Optimizer> optimizer) {
  check_argument(optimizer != nullptr, "add_optimizer", "optimizer", "must not be null");
  check_supported_optimizer(*optimizer);
  add_named("add_optimizer", layout::kOptimizers, name, optimizers_.count(name) != 0,
            optimizer_part(optimizer));
  optimizers_.emplace(name, std::move(optimizer));
}

void TrainingState::add_scheduler(const std::string& name,
                                  std::shared_ptr<torch::optim::LRScheduler> scheduler) {
  check_argument(scheduler != nullptr, "add_scheduler", "scheduler", "must not be null");
  auto save = [scheduler] {
    StateDict state;
    state.set_int(std::string(layout::kStepCount), SchedulerAccess::step_count(*scheduler));
    return state;
  };
  auto load = [scheduler](const StateDict& state) {
    const std::string key(layout::kStepCount);
    if (state.contains(key)) {
      SchedulerAccess::step_count(*scheduler) = static_cast<unsigned>(state.get_int(key));
    }
  };
  add_named("add_scheduler", layout::kSchedulers, name, schedulers_.count(name) != 0,
            function_part(save, load));
  schedulers_.emplace(name, std::move(scheduler));
}

void TrainingState::add_state(const std::string& name, std::shared_ptr<Stateful> object) {
  check_argument(object != nullptr, "add_state", "object", "must not be null");
  add_named("add_state", layout::kStates, name, states_.count(name) != 0, stateful_part(object));
  states_.emplace(name, std::move(object));
}

StateDict TrainingState::save() const {
  StateDict state;
  for (const Component& component : components_) {
    state.merge(component.prefix, component.part->save());
  }
  state.merge(std::string(layout::kRng), rng_state_dict());
  return state;
}

IncompatibleKeys TrainingState::load(const StateDict& state, bool strict, const std::string& what) {
  // The generators are a component like the others, only not registered by anyone.
  auto rng = function_part(rng_state_dict, load_rng_state);
  std::vector<std::pair<std::string, StatePart*>> parts;
  for (const Component& component : components_) {
    parts.emplace_back(component.prefix, component.part.get());
  }
  parts.emplace_back(std::string(layout::kRng), rng.get());

  // 1. Check everything before changing anything.
  IncompatibleKeys report;
  std::vector<StateDict> given;
  for (const auto& [prefix, part] : parts) {
    given.push_back(state.sub(prefix));
    IncompatibleKeys left_out;
    try {
      part->check(given.back(), strict, left_out);
    } catch (const StateError& error) {
      throw in_context(error, prefix, what);
    }
    prefix_keys(left_out.missing_keys, prefix);
    prefix_keys(left_out.unexpected_keys, prefix);
    append(report.missing_keys, left_out.missing_keys);
    append(report.unexpected_keys, left_out.unexpected_keys);
  }
  for (const auto& entry : state) {
    const std::string& key = entry.first;
    const bool placed = std::any_of(parts.begin(), parts.end(),
                                    [&](const auto& part) { return under(key, part.first); });
    if (placed) continue;
    if (strict) {
      // Name the component it would belong to: "optimizers/ghost", say.
      const size_t section_end = key.find(layout::kSeparator);
      const size_t name_end = section_end == std::string::npos
                                  ? section_end
                                  : key.find(layout::kSeparator, section_end + 1);
      throw StateError(what, key,
                       fmt::format("is not expected: nothing registered here saves '{}' "
                                   "(register it, or load non-strictly to ignore it)",
                                   key.substr(0, name_end)));
    }
    report.unexpected_keys.push_back(key);
  }

  // 2. Apply, keeping what was there to put it back if a component fails to load.
  std::vector<StateDict> backup;
  for (const auto& [prefix, part] : parts) backup.push_back(deep_copy(part->save()));
  try {
    for (size_t i = 0; i < parts.size(); ++i) parts[i].second->load(given[i], strict);
  } catch (...) {
    try {
      for (size_t i = 0; i < parts.size(); ++i) parts[i].second->load(backup[i], true);
    } catch (const std::exception& error) {
      warn(fmt::format("{}: restoring the state after a failed load failed too: {}", what,
                       error.what()));
    }
    throw;
  }
  warn_left_out(report, what);
  return report;
}

}  // namespace tth
