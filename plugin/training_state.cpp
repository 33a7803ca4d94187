#include "training_state.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <optional>
#include <unordered_map>

#include "check_argument.h"
#include "module_state.h"
#include "optimizer_state.h"
#include "rng_state.h"
#include "scheduler_state.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/state_layout.h"

namespace tth {

namespace layout = state_layout;

namespace {

void append(std::vector<std::string>& to, const std::vector<std::string>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

class StatefulPart final : public StatePart {
 public:
  explicit StatefulPart(Stateful& object) : object_(object) {}
  StateDict save() const override { return object_.state_dict(); }
  void check(const StateDict& given, bool strict, IncompatibleKeys& report) const override {
    const StateDict expected = save();
    const IncompatibleKeys left_out = check_compatible(expected, given, strict, "");
    append(report.unexpected_keys, left_out.unexpected_keys);
    // A partial state is not loaded at all (its load_state_dict expects the whole state), so
    // every key keeps its current value: report them all.
    if (!left_out.missing_keys.empty()) {
      for (const auto& entry : expected) report.missing_keys.push_back(entry.first);
    }
  }
  std::function<void()> prepare(StateDict given, bool strict) override {
    if (!strict) {
      for (const auto& entry : save()) {
        if (!given.contains(entry.first)) return [] {};
      }
    }
    return [this, given = std::move(given)] { object_.load_state_dict(given); };
  }
  bool applying_may_fail() const override { return true; }

 private:
  Stateful& object_;
};

class ModulePart final : public StatePart {
 public:
  explicit ModulePart(torch::nn::Module& module) : module_(module) {}
  StateDict save() const override { return module_state_dict(module_); }
  std::function<void()> prepare(StateDict given, bool) override {
    return [this, given = std::make_shared<StateDict>(std::move(given))] {
      load_module_state(module_, *given);
    };
  }

 private:
  torch::nn::Module& module_;
};

class OptimizerPart final : public StatePart {
 public:
  explicit OptimizerPart(torch::optim::Optimizer& optimizer) : optimizer_(optimizer) {}
  StateDict save() const override { return optimizer_state_dict(optimizer_); }
  void check(const StateDict& given, bool strict, IncompatibleKeys& report) const override {
    check_optimizer_state(optimizer_, given, strict, report);
  }
  std::function<void()> prepare(StateDict given, bool strict) override {
    return prepare_optimizer_state(optimizer_, given, strict);
  }

 private:
  torch::optim::Optimizer& optimizer_;
};

class FunctionPart final : public StatePart {
 public:
  FunctionPart(std::function<StateDict()> save, std::function<void(const StateDict&)> load)
      : save_(std::move(save)), load_(std::move(load)) {}
  StateDict save() const override { return save_(); }
  std::function<void()> prepare(StateDict given, bool) override {
    return [this, given = std::move(given)] { load_(given); };
  }

 private:
  std::function<StateDict()> save_;
  std::function<void(const StateDict&)> load_;
};

// A component to load: its prefix in the whole state ("" for a lone part) and its part.
struct Target {
  std::string prefix;
  StatePart* part;
};

StateError in_context(const StateError& error, const std::string& prefix, const std::string& what,
                      const std::string& file) {
  return StateError(what, prefix.empty() ? error.key() : layout::key(prefix, error.key()),
                    error.problem(), file);
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

// The one loading procedure (see training_state.h): `given[i]` is the state of `targets[i]`,
// `unplaced` the keys that belong to no target.
IncompatibleKeys load_targets(const std::vector<Target>& targets, std::vector<StateDict> given,
                              const std::vector<std::string>& unplaced, bool strict,
                              const std::string& what, const std::string& file) {
  // 1. Check everything before changing anything.
  IncompatibleKeys report;
  for (size_t i = 0; i < targets.size(); ++i) {
    IncompatibleKeys left_out;
    try {
      targets[i].part->check(given[i], strict, left_out);
    } catch (const StateError& error) {
      throw in_context(error, targets[i].prefix, what, file);
    }
    for (auto* keys : {&left_out.missing_keys, &left_out.unexpected_keys}) {
      for (std::string& key : *keys) {
        if (!targets[i].prefix.empty()) key = layout::key(targets[i].prefix, key);
      }
    }
    append(report.missing_keys, left_out.missing_keys);
    append(report.unexpected_keys, left_out.unexpected_keys);
  }
  for (const std::string& key : unplaced) {
    if (strict) {
      // Name the component it would belong to: "optimizers/ghost", say.
      const size_t section_end = key.find(layout::kSeparator);
      const size_t name_end = section_end == std::string::npos
                                  ? section_end
                                  : key.find(layout::kSeparator, section_end + 1);
      throw StateError(what, key,
                       fmt::format("is not expected: nothing registered here saves '{}' "
                                   "(register it, or load non-strictly to ignore it)",
                                   key.substr(0, name_end)),
                       file);
    }
    report.unexpected_keys.push_back(key);
  }

  // 2. Prepare every component: the allocations; nothing changes yet.
  std::vector<std::function<void()>> actions;
  for (size_t i = 0; i < targets.size(); ++i) {
    actions.push_back(targets[i].part->prepare(std::move(given[i]), strict));
  }

  // 3. Apply what runs user code first, each after a backup of its component; if one
  // throws, put back (latest first) every one applied, itself included.
  std::vector<std::pair<const Target*, StateDict>> applied;
  auto restore = [&] {
    for (auto it = applied.rbegin(); it != applied.rend(); ++it) {
      try {
        it->first->part->prepare(std::move(it->second), /*strict=*/true)();
      } catch (const std::exception& error) {
        warn(fmt::format("{}: restoring '{}' after a failed load failed too: {}", what,
                         it->first->prefix, error.what()));
      }
    }
  };
  try {
    for (size_t i = 0; i < targets.size(); ++i) {
      if (!targets[i].part->applying_may_fail()) continue;
      applied.emplace_back(&targets[i], deep_copy(targets[i].part->save()));
      actions[i]();
    }
  } catch (const StateError& error) {  // a StateDict accessor in a component's own load
    restore();
    throw in_context(error, applied.empty() ? std::string() : applied.back().first->prefix, what,
                     file);
  } catch (...) {
    restore();
    throw;
  }
  // 4. The rest cannot fail once prepared.
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!targets[i].part->applying_may_fail()) actions[i]();
  }
  warn_left_out(report, file.empty() ? what : fmt::format("{}: {}", what, file));
  return report;
}

}  // namespace

void warn_left_out(const IncompatibleKeys& report, const std::string& what) {
  std::vector<std::string> parts;
  if (!report.missing_keys.empty()) {
    parts.push_back(fmt::format("kept the current values of {} missing key(s) [{}]",
                                report.missing_keys.size(), fmt::join(report.missing_keys, ", ")));
  }
  if (!report.unexpected_keys.empty()) {
    parts.push_back(fmt::format("ignored {} unexpected key(s) [{}]", report.unexpected_keys.size(),
                                fmt::join(report.unexpected_keys, ", ")));
  }
  if (!parts.empty()) warn(fmt::format("{}: non-strict load {}", what, fmt::join(parts, " and ")));
}

void StatePart::check(const StateDict& given, bool strict, IncompatibleKeys& report) const {
  const IncompatibleKeys left_out = check_compatible(save(), given, strict, "");
  append(report.missing_keys, left_out.missing_keys);
  append(report.unexpected_keys, left_out.unexpected_keys);
}

std::unique_ptr<StatePart> stateful_part(Stateful& object) {
  return std::make_unique<StatefulPart>(object);
}

std::unique_ptr<StatePart> module_part(torch::nn::Module& module) {
  return std::make_unique<ModulePart>(module);
}

std::unique_ptr<StatePart> optimizer_part(torch::optim::Optimizer& optimizer) {
  return std::make_unique<OptimizerPart>(optimizer);
}

std::unique_ptr<StatePart> function_part(std::function<StateDict()> save,
                                         std::function<void(const StateDict&)> load) {
  return std::make_unique<FunctionPart>(std::move(save), std::move(load));
}

IncompatibleKeys load_part(StatePart& part, StateDict given, bool strict, const std::string& what,
                           const std::string& file) {
  std::vector<StateDict> dicts;
  dicts.push_back(std::move(given));
  return load_targets({{"", &part}}, std::move(dicts), {}, strict, what, file);
}

TrainingState::TrainingState() = default;
TrainingState::~TrainingState() = default;

void TrainingState::add(std::string prefix, std::unique_ptr<StatePart> part) {
  components_.push_back({std::move(prefix), std::move(part)});
}

void TrainingState::check_name(const char* who, const std::string& name, bool taken) const {
  check_argument(!name.empty(), who, "name", "must not be empty");
  check_argument(name.find(layout::kSeparator) == std::string::npos, who, "name",
                 "must not contain '/'", fmt::format("'{}'", name));
  check_argument(!taken, who, "name", "must be unique", fmt::format("'{}' again", name));
}

void TrainingState::add_model(const std::string& name, std::shared_ptr<torch::nn::Module> model) {
  check_argument(model != nullptr, "add_model", "model", "must not be null");
  check_name("add_model", name, models_.count(name) != 0);
  add(layout::key(layout::kModels, name), module_part(*model));
  models_.emplace(name, std::move(model));
}

void TrainingState::add_optimizer(const std::string& name,
                                  std::shared_ptr<torch::optim::Optimizer> optimizer) {
  check_argument(optimizer != nullptr, "add_optimizer", "optimizer", "must not be null");
  check_supported_optimizer(*optimizer, "add_optimizer");
  check_name("add_optimizer", name, optimizers_.count(name) != 0);
  add(layout::key(layout::kOptimizers, name), optimizer_part(*optimizer));
  optimizers_.emplace(name, std::move(optimizer));
}

void TrainingState::add_scheduler(const std::string& name,
                                  std::shared_ptr<torch::optim::LRScheduler> scheduler) {
  check_argument(scheduler != nullptr, "add_scheduler", "scheduler", "must not be null");
  check_name("add_scheduler", name, schedulers_.count(name) != 0);
  torch::optim::LRScheduler* raw = scheduler.get();  // kept alive by schedulers_
  auto save = [raw] { return scheduler_state_dict(*raw); };
  auto load = [raw](const StateDict& state) { load_scheduler_state(*raw, state); };
  add(layout::key(layout::kSchedulers, name), function_part(save, load));
  schedulers_.emplace(name, std::move(scheduler));
}

void TrainingState::add_state(const std::string& name, std::shared_ptr<Stateful> object) {
  check_argument(object != nullptr, "add_state", "object", "must not be null");
  check_name("add_state", name, states_.count(name) != 0);
  add(layout::key(layout::kStates, name), stateful_part(*object));
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

IncompatibleKeys TrainingState::load(StateDict state, bool strict, const std::string& what) {
  // The generators are a component like the others, only not registered by anyone.
  auto rng = function_part(rng_state_dict, load_rng_state);
  std::vector<Target> targets;
  for (const Component& component : components_) {
    targets.push_back({component.prefix, component.part.get()});
  }
  targets.push_back({std::string(layout::kRng), rng.get()});

  // Hand each entry to its component, moved rather than copied so that a value is freed as
  // soon as it is applied. A component's prefix is the key's first one or two components
  // ("rng", "models/main").
  std::unordered_map<std::string, size_t> by_prefix;
  for (size_t i = 0; i < targets.size(); ++i) by_prefix.emplace(targets[i].prefix, i);
  std::vector<StateDict> given(targets.size());
  std::vector<std::string> unplaced;
  for (auto& [key, value] : state.release()) {
    const size_t first = key.find(layout::kSeparator);
    const size_t second =
        first == std::string::npos ? first : key.find(layout::kSeparator, first + 1);
    std::optional<size_t> owner;
    for (size_t end : {first, second}) {
      if (end == std::string::npos || owner) continue;
      auto found = by_prefix.find(key.substr(0, end));
      if (found != by_prefix.end()) owner = found->second;
    }
    if (!owner) {
      unplaced.push_back(key);
      continue;
    }
    given[*owner].set(key.substr(targets[*owner].prefix.size() + 1), std::move(value));
  }
  return load_targets(targets, std::move(given), unplaced, strict, what, {});
}

}  // namespace tth
