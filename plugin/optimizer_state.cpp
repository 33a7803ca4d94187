#include "optimizer_state.h"

#include <fmt/format.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "check_argument.h"
#include "libtorch_compat.h"
#include "tth/error.h"
#include "tth/state_layout.h"

namespace tth {

namespace {

namespace layout = state_layout;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;

// Each optimizer type lists its option and state fields once, for a visitor that saves,
// loads, checks or names them. `v.real(name, double&)`, `v.flag(name, bool&)`,
// `v.count(name, int64_t&)`, `v.tensor(name, Tensor&, need)` (a tensor shaped like the
// parameter; kRequired where LibTorch's step always creates it, kOptional where an option
// such as amsgrad or centered decides).
enum class Need { kOptional, kRequired };
template <typename V>
void fields(V& v, torch::optim::SGDOptions& o) {
  v.real("lr", o.lr());
  v.real("momentum", o.momentum());
  v.real("dampening", o.dampening());
  v.real("weight_decay", o.weight_decay());
  v.flag("nesterov", o.nesterov());
}
template <typename V>
void fields(V& v, torch::optim::SGDParamState& s) {
  v.tensor("momentum_buffer", s.momentum_buffer(), Need::kRequired);
}
template <typename V, typename Options>  // Adam and AdamW share their fields.
void adam_fields(V& v, Options& o) {
  v.real("lr", o.lr());
  v.real("betas/0", std::get<0>(o.betas()));
  v.real("betas/1", std::get<1>(o.betas()));
  v.real("eps", o.eps());
  v.real("weight_decay", o.weight_decay());
  v.flag("amsgrad", o.amsgrad());
}
template <typename V, typename State>
void adam_state_fields(V& v, State& s) {
  v.count("step", s.step());
  v.tensor("exp_avg", s.exp_avg(), Need::kRequired);
  v.tensor("exp_avg_sq", s.exp_avg_sq(), Need::kRequired);
  v.tensor("max_exp_avg_sq", s.max_exp_avg_sq(), Need::kOptional);
}
template <typename V>
void fields(V& v, torch::optim::AdamOptions& o) {
  adam_fields(v, o);
}
template <typename V>
void fields(V& v, torch::optim::AdamParamState& s) {
  adam_state_fields(v, s);
}
template <typename V>
void fields(V& v, torch::optim::AdamWOptions& o) {
  adam_fields(v, o);
}
template <typename V>
void fields(V& v, torch::optim::AdamWParamState& s) {
  adam_state_fields(v, s);
}
template <typename V>
void fields(V& v, torch::optim::AdagradOptions& o) {
  v.real("lr", o.lr());
  v.real("lr_decay", o.lr_decay());
  v.real("weight_decay", o.weight_decay());
  v.real("initial_accumulator_value", o.initial_accumulator_value());
  v.real("eps", o.eps());
}
template <typename V>
void fields(V& v, torch::optim::AdagradParamState& s) {
  v.tensor("sum", s.sum(), Need::kRequired);
  v.count("step", s.step());
}
template <typename V>
void fields(V& v, torch::optim::RMSpropOptions& o) {
  v.real("lr", o.lr());
  v.real("alpha", o.alpha());
  v.real("eps", o.eps());
  v.real("weight_decay", o.weight_decay());
  v.real("momentum", o.momentum());
  v.flag("centered", o.centered());
}
template <typename V>
void fields(V& v, torch::optim::RMSpropParamState& s) {
  v.count("step", s.step());
  v.tensor("square_avg", s.square_avg(), Need::kRequired);
  v.tensor("momentum_buffer", s.momentum_buffer(), Need::kOptional);
  v.tensor("grad_avg", s.grad_avg(), Need::kOptional);
}

// Saves fields into a StateDict under a prefix; undefined tensors are skipped.
struct Saver {
  StateDict& out;
  std::string prefix;
  void real(const char* name, double& value) { out.set_double(prefix + name, value); }
  void flag(const char* name, bool& value) { out.set_bool(prefix + name, value); }
  void count(const char* name, int64_t& value) { out.set_int(prefix + name, value); }
  void tensor(const char* name, at::Tensor& value, Need) {
    if (value.defined()) out.set(prefix + name, value.detach());
  }
};

// Loads fields from a checked StateDict: scalars that are present (a non-strict load keeps
// the others), tensors as present or else undefined (a state has no max_exp_avg_sq without
// amsgrad). Each tensor is copied to the parameter's device and released from `in` at once.
struct Loader {
  StateDict& in;
  std::string prefix;
  const at::Tensor* param = nullptr;
  void real(const char* name, double& value) {
    if (in.contains(prefix + name)) value = in.get_double(prefix + name);
  }
  void flag(const char* name, bool& value) {
    if (in.contains(prefix + name)) value = in.get_bool(prefix + name);
  }
  void count(const char* name, int64_t& value) {
    if (in.contains(prefix + name)) value = in.get_int(prefix + name);
  }
  void tensor(const char* name, at::Tensor& value, Need) {
    const std::string key = prefix + name;
    value = in.contains(key) ? std::get<at::Tensor>(in.take(key))
                                   .to(param->device(), /*non_blocking=*/false, /*copy=*/true)
                             : at::Tensor();
  }
};

// Checks fields: scalars must be present when `required`, else a missing one is reported
// (when `report` is given); tensors, when present, must have the parameter's shape and dtype.
struct Checker {
  const StateDict& in;
  std::string prefix;
  bool required;
  std::set<std::string>& known;
  IncompatibleKeys* report;
  const at::Tensor* param = nullptr;

  void expect(const std::string& key, const std::string& expected) const {
    const std::string got = describe(in.at(key));
    if (got != expected) {
      throw StateError({}, key, fmt::format("holds {} but {} is expected", got, expected));
    }
  }
  void scalar(const char* name, const char* expected) {
    const std::string key = prefix + name;
    known.insert(key);
    if (in.contains(key)) return expect(key, expected);
    if (required) throw StateError({}, key, "is missing from the loaded state");
    if (report != nullptr) report->missing_keys.push_back(key);
  }
  void real(const char* name, double&) { scalar(name, "Double[]"); }
  void flag(const char* name, bool&) { scalar(name, "Bool[]"); }
  void count(const char* name, int64_t&) { scalar(name, "Long[]"); }
  void tensor(const char* name, at::Tensor&, Need need) {
    const std::string key = prefix + name;
    known.insert(key);
    if (in.contains(key)) return expect(key, describe(param->detach()));
    if (required && need == Need::kRequired) {
      throw StateError({}, key, "is missing from the loaded state");
    }
  }
};

// Calls fn(options-of-type, param-state-type-tag) for the optimizer's concrete type.
template <typename Fn>
void dispatch(const torch::optim::Optimizer& optimizer, Fn&& fn) {
  using namespace torch::optim;
  if (dynamic_cast<const SGD*>(&optimizer)) return fn(SGDOptions(0), SGDParamState());
  if (dynamic_cast<const Adam*>(&optimizer)) return fn(AdamOptions(), AdamParamState());
  if (dynamic_cast<const AdamW*>(&optimizer)) return fn(AdamWOptions(), AdamWParamState());
  if (dynamic_cast<const Adagrad*>(&optimizer)) return fn(AdagradOptions(), AdagradParamState());
  if (dynamic_cast<const RMSprop*>(&optimizer)) return fn(RMSpropOptions(), RMSpropParamState());
  throw argument_error("optimizer state", "optimizer",
                       "must be SGD, Adam, AdamW, Adagrad or RMSprop",
                       c10::demangle(typeid(optimizer).name()));
}

// The names of a state type's fields.
struct Namer {
  std::vector<std::string> names;
  void real(const char* name, double&) { names.emplace_back(name); }
  void flag(const char* name, bool&) { names.emplace_back(name); }
  void count(const char* name, int64_t&) { names.emplace_back(name); }
  void tensor(const char* name, at::Tensor&, Need) { names.emplace_back(name); }
};

template <typename State>
std::vector<std::string> field_names(State state) {
  Namer namer;
  fields(namer, state);
  return namer.names;
}

// Whether `state` holds some field of this optimizer type under `prefix`: then the
// parameter's state is loaded (and must be complete); else it is absent.
bool has_state(const StateDict& state, const std::string& prefix,
               const std::vector<std::string>& names) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& name) { return state.contains(prefix + name); });
}

std::string group_prefix(size_t g) {
  return layout::key(layout::kParamGroups, fmt::to_string(g), "");
}
std::string state_prefix(size_t g, size_t i) {
  return layout::key(layout::kParamState, fmt::to_string(g), fmt::to_string(i), "");
}

}  // namespace

void check_supported_optimizer(const torch::optim::Optimizer& optimizer, const char* who) {
  try {
    dispatch(optimizer, [](auto, auto) {});
  } catch (const Error&) {
    throw argument_error(who, "optimizer", "must be SGD, Adam, AdamW, Adagrad or RMSprop",
                         c10::demangle(typeid(optimizer).name()));
  }
}

StateDict optimizer_state_dict(const torch::optim::Optimizer& optimizer) {
  StateDict out;
  dispatch(optimizer, [&](auto options_tag, auto state_tag) {
    using Options = decltype(options_tag);
    using State = decltype(state_tag);
    const auto& groups = optimizer.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      Saver saver{out, group_prefix(g)};
      fields(saver, static_cast<Options&>(const_cast<OptimizerOptions&>(groups[g].options())));
      const auto& params = groups[g].params();
      for (size_t i = 0; i < params.size(); ++i) {
        auto found = optimizer.state().find(compat::optimizer_state_key(params[i]));
        if (found == optimizer.state().end()) continue;
        Saver state_saver{out, state_prefix(g, i)};
        fields(state_saver, static_cast<State&>(*found->second));
      }
    }
  });
  return out;
}

void check_optimizer_state(const torch::optim::Optimizer& optimizer, const StateDict& state,
                           bool strict, IncompatibleKeys& report) {
  std::set<std::string> known;
  const StateDict current = strict ? StateDict() : optimizer_state_dict(optimizer);
  dispatch(optimizer, [&](auto options_tag, auto state_tag) {
    auto options = options_tag;
    auto param_state = state_tag;
    const std::vector<std::string> names = field_names(state_tag);
    const auto& groups = optimizer.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      Checker group{state, group_prefix(g), strict, known, &report};
      fields(group, options);
      const auto& params = groups[g].params();
      for (size_t i = 0; i < params.size(); ++i) {
        const std::string prefix = state_prefix(g, i);
        const bool present = has_state(state, prefix, names);
        // A parameter's state is absent (never stepped, or left out) or complete.
        Checker checker{state, prefix, present, known, nullptr, &params[i]};
        fields(checker, param_state);
        if (present || strict) continue;
        for (const auto& entry : current) {  // left out: its current state is kept
          if (entry.first.compare(0, prefix.size(), prefix) == 0) {
            report.missing_keys.push_back(entry.first);
          }
        }
      }
    }
  });
  for (const auto& entry : state) {
    if (known.count(entry.first)) continue;
    if (!strict) {
      report.unexpected_keys.push_back(entry.first);
      continue;
    }
    throw StateError({}, entry.first,
                     "is not expected: another optimizer type, or more parameter groups or "
                     "parameters than this optimizer has (load non-strictly to ignore it)");
  }
}

std::function<void()> prepare_optimizer_state(torch::optim::Optimizer& optimizer, StateDict& state,
                                              bool strict) {
  std::vector<std::unique_ptr<OptimizerOptions>> options;
  std::vector<std::pair<compat::OptimizerStateKey, std::unique_ptr<OptimizerParamState>>> loaded;
  std::vector<compat::OptimizerStateKey> never_stepped;
  dispatch(optimizer, [&](auto options_tag, auto state_tag) {
    using Options = decltype(options_tag);
    using State = decltype(state_tag);
    const std::vector<std::string> names = field_names(state_tag);
    const auto& groups = optimizer.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      options.push_back(groups[g].options().clone());
      Loader loader{state, group_prefix(g)};
      fields(loader, static_cast<Options&>(*options.back()));
      const auto& params = groups[g].params();
      for (size_t i = 0; i < params.size(); ++i) {
        const std::string prefix = state_prefix(g, i);
        if (!has_state(state, prefix, names)) {
          // Strict: the state says this parameter never stepped. Non-strict: left out, kept.
          if (strict) never_stepped.push_back(compat::optimizer_state_key(params[i]));
          continue;
        }
        auto param_state = std::make_unique<State>();
        Loader state_loader{state, prefix, &params[i]};
        fields(state_loader, *param_state);
        loaded.emplace_back(compat::optimizer_state_key(params[i]), std::move(param_state));
      }
    }
  });
  // Everything that can fail (allocations) is done: applying only moves pointers.
  return [&optimizer, options = std::make_shared<decltype(options)>(std::move(options)),
          loaded = std::make_shared<decltype(loaded)>(std::move(loaded)),
          never_stepped = std::move(never_stepped)]() {
    auto& groups = optimizer.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) groups[g].set_options(std::move((*options)[g]));
    for (const auto& key : never_stepped) optimizer.state().erase(key);
    for (auto& [key, param_state] : *loaded) optimizer.state()[key] = std::move(param_state);
  };
}

}  // namespace tth
