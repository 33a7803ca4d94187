// ParameterShift and Chainer's seven parameter shifts.
#include <c10/util/Type.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string_view>
#include <typeinfo>
#include <utility>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/extensions/exponential_shift.h"
#include "tth/extensions/inverse_shift.h"
#include "tth/extensions/linear_shift.h"
#include "tth/extensions/multistep_shift.h"
#include "tth/extensions/parameter_shift.h"
#include "tth/extensions/polynomial_shift.h"
#include "tth/extensions/step_shift.h"
#include "tth/extensions/warmup_shift.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

constexpr std::string_view kLr = "lr";
constexpr const char* kMainOptimizer = "main";
// State keys; "_t" and "_last_value" are Chainer's.
constexpr const char* kT = "_t";
constexpr const char* kLastValue = "_last_value";
constexpr const char* kInit = "_init";
constexpr const char* kHasLastValue = "_has_last_value";

template <typename AdamLikeOptions>
double* adam_field(AdamLikeOptions& options, std::string_view attr) {
  if (attr == "weight_decay") return &options.weight_decay();
  if (attr == "eps") return &options.eps();
  if (attr == "beta1") return &std::get<0>(options.betas());
  if (attr == "beta2") return &std::get<1>(options.betas());
  return nullptr;
}

// The option named `attr` of an options object, or nullptr where its type has none. "lr" is
// not here: every optimizer has it, through the virtual get_lr / set_lr.
double* option_field(torch::optim::OptimizerOptions& options, std::string_view attr) {
  using namespace torch::optim;
  if (auto* sgd = dynamic_cast<SGDOptions*>(&options)) {
    if (attr == "momentum") return &sgd->momentum();
    if (attr == "dampening") return &sgd->dampening();
    if (attr == "weight_decay") return &sgd->weight_decay();
  } else if (auto* adam = dynamic_cast<AdamOptions*>(&options)) {
    return adam_field(*adam, attr);
  } else if (auto* adamw = dynamic_cast<AdamWOptions*>(&options)) {
    return adam_field(*adamw, attr);
  } else if (auto* adagrad = dynamic_cast<AdagradOptions*>(&options)) {
    if (attr == "weight_decay") return &adagrad->weight_decay();
    if (attr == "eps") return &adagrad->eps();
    if (attr == "lr_decay") return &adagrad->lr_decay();
  } else if (auto* rmsprop = dynamic_cast<RMSpropOptions*>(&options)) {
    if (attr == "momentum") return &rmsprop->momentum();
    if (attr == "weight_decay") return &rmsprop->weight_decay();
    if (attr == "eps") return &rmsprop->eps();
    if (attr == "alpha") return &rmsprop->alpha();
  }
  return nullptr;
}

bool has_option(torch::optim::OptimizerOptions& options, std::string_view attr) {
  return attr == kLr || option_field(options, attr) != nullptr;
}

double get_option(torch::optim::OptimizerOptions& options, std::string_view attr) {
  return attr == kLr ? options.get_lr() : *option_field(options, attr);
}

void set_option(torch::optim::OptimizerOptions& options, std::string_view attr, double value) {
  if (attr == kLr) {
    options.set_lr(value);
  } else if (double* field = option_field(options, attr)) {
    *field = value;
  }
}

std::string registered_names(const TorchTrainerHook& hook) {
  std::vector<std::string> names;
  for (const auto& entry : hook.optimizers()) names.push_back(fmt::format("'{}'", entry.first));
  if (names.empty()) return "none is registered";
  return fmt::format("registered: {}", fmt::join(names, ", "));
}

// Chainer's stop at the target: the value becomes the target where `ratio` (value / target or
// target / value, per shift) is > 1 when `above_one`, or < 1 otherwise. Written as Chainer
// writes it rather than as min/max, so that negative values compare the same.
double clip(double value, double target, double ratio, bool above_one) {
  if (above_one ? ratio > 1 : ratio < 1) return target;
  return value;
}

}  // namespace

// ---- ParameterShift ----

const std::vector<std::string>& ParameterShift::attributes() {
  static const std::vector<std::string> names{
      "lr", "momentum", "dampening", "weight_decay", "eps", "beta1", "beta2", "alpha", "lr_decay"};
  return names;
}

ParameterShift::ParameterShift(std::string who, std::string attr, std::optional<double> init,
                               std::shared_ptr<torch::optim::Optimizer> optimizer)
    : who_(std::move(who)), attr_(std::move(attr)), init_(init), optimizer_(std::move(optimizer)) {
  const auto& names = attributes();
  check_argument(std::find(names.begin(), names.end(), attr_) != names.end(), who_, "attr",
                 fmt::format("must be one of {}", fmt::join(names, ", ")),
                 fmt::format("'{}'", attr_));
  if (init_) check_argument(std::isfinite(*init_), who_, "init", "must be finite", *init_);
}

torch::optim::Optimizer& ParameterShift::prepare(TorchTrainerHook& hook) {
  if (!optimizer_) {
    auto found = hook.optimizers().find(kMainOptimizer);
    if (found == hook.optimizers().end()) {
      throw Error(fmt::format(
          "{}: no optimizer was given and none is registered as '{}' ({}); register it with "
          "add_optimizer(\"{}\", ...) or give one with the options' optimizer(...)",
          who_, kMainOptimizer, registered_names(hook), kMainOptimizer));
    }
    optimizer_ = found->second;
  }
  torch::optim::Optimizer& optimizer = *optimizer_;
  auto& groups = optimizer.param_groups();
  if (groups.empty()) {
    throw Error(
        fmt::format("{}: the optimizer has no parameter group to set '{}' in", who_, attr_));
  }
  for (auto& group : groups) {
    if (has_option(group.options(), attr_)) continue;
    std::vector<std::string> available;
    for (const std::string& name : attributes()) {
      if (has_option(group.options(), name)) available.push_back(name);
    }
    throw Error(fmt::format(
        "{}: attr '{}' is not an option of optimizer {} (a shift can set its {}); choose "
        "another attr or optimizer",
        who_, attr_, c10::demangle(typeid(optimizer).name()), fmt::join(available, ", ")));
  }
  if (!init()) resolved_init_ = get_option(groups.front().options(), attr_);
  return optimizer;
}

void ParameterShift::set_value(double value) {
  for (auto& group : optimizer_->param_groups()) set_option(group.options(), attr_, value);
  set_option(optimizer_->defaults(), attr_, value);
  last_value_ = value;
}

void ParameterShift::initialize(TorchTrainerHook& hook) {
  prepare(hook);
  set_value(last_value_ ? *last_value_ : start_value(*init()));
}

void ParameterShift::operator()(TorchTrainerHook& hook) {
  prepare(hook);
  ++t_;
  if (const std::optional<double> value = value_at(t_, *init())) set_value(*value);
}

StateDict ParameterShift::state_dict() const {
  constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  StateDict state;
  state.set_int(kT, t_);
  state.set_double(kLastValue, last_value_.value_or(kNone));
  state.set_double(kInit, init().value_or(kNone));
  state.set_bool(kHasLastValue, last_value_.has_value());
  return state;
}

void ParameterShift::load_state_dict(const StateDict& state) {
  const int64_t t = state.get_int(kT);
  if (t < 0) throw StateError({}, kT, fmt::format("must be a count of calls >= 0, got {}", t));
  t_ = t;
  if (state.get_bool(kHasLastValue)) {
    last_value_ = state.get_double(kLastValue);
    resolved_init_ = state.get_double(kInit);
  } else {
    last_value_.reset();
    resolved_init_.reset();
  }
}

// ---- The shifts ----

ExponentialShift::ExponentialShift(double rate, ExponentialShiftOptions options)
    : ParameterShift("ExponentialShift", options.attr(), options.init(), options.optimizer()),
      rate_(rate),
      target_(options.target()) {
  check_argument(std::isfinite(rate) && rate >= 0, who(), "rate", "must be finite and >= 0", rate);
}

std::optional<double> ExponentialShift::value_at(int64_t t, double init) const {
  const double value = init * std::pow(rate_, static_cast<double>(t));
  if (!target_) return value;
  return clip(value, *target_, value / *target_, rate_ > 1);
}

StepShift::StepShift(double gamma, int64_t step, StepShiftOptions options)
    : ParameterShift("StepShift", options.attr(), options.init(), options.optimizer()),
      gamma_(gamma),
      step_(step),
      target_(options.target()) {
  check_argument(std::isfinite(gamma), who(), "gamma", "must be finite", gamma);
  check_argument(step >= 1, who(), "step", "must be >= 1", step);
}

std::optional<double> StepShift::value_at(int64_t t, double init) const {
  const double value = init * std::pow(gamma_, static_cast<double>(t / step_));
  if (!target_) return value;
  return clip(value, *target_, value / *target_, gamma_ > 1);
}

MultistepShift::MultistepShift(double gamma, std::vector<int64_t> step_value,
                               MultistepShiftOptions options)
    : ParameterShift("MultistepShift", options.attr(), options.init(), options.optimizer()),
      gamma_(gamma),
      step_value_(std::move(step_value)) {
  check_argument(std::isfinite(gamma), who(), "gamma", "must be finite", gamma);
  check_argument(!step_value_.empty(), who(), "step_value", "must not be empty");
  check_argument(step_value_.front() >= 1, who(), "step_value", "must hold calls >= 1",
                 step_value_);
  check_argument(std::adjacent_find(step_value_.begin(), step_value_.end(),
                                    std::greater_equal<>()) == step_value_.end(),
                 who(), "step_value", "must be strictly increasing", step_value_);
}

std::optional<double> MultistepShift::value_at(int64_t t, double init) const {
  // Chainer passes at most one milestone per call; with increasing milestones that is the
  // number of milestones reached.
  const auto passed = std::upper_bound(step_value_.begin(), step_value_.end(), t);
  return init * std::pow(gamma_, static_cast<double>(passed - step_value_.begin()));
}

LinearShift::LinearShift(std::pair<double, double> value_range,
                         std::pair<int64_t, int64_t> time_range, LinearShiftOptions options)
    : ParameterShift("LinearShift", options.attr(), std::nullopt, options.optimizer()),
      value_range_(value_range),
      time_range_(time_range) {
  check_argument(std::isfinite(value_range.first) && std::isfinite(value_range.second), who(),
                 "value_range", "must be finite", value_range);
  check_argument(time_range.first <= time_range.second, who(), "time_range",
                 "must not end before it begins", time_range);
}

double LinearShift::compute(int64_t t) const {
  const auto [t1, t2] = time_range_;
  const auto [v1, v2] = value_range_;
  if (t <= t1) return v1;
  if (t >= t2) return v2;
  const double rate = static_cast<double>(t - t1) / static_cast<double>(t2 - t1);
  return v1 + rate * (v2 - v1);
}

std::optional<double> LinearShift::value_at(int64_t t, double) const { return compute(t); }

double LinearShift::start_value(double) const { return compute(0); }

WarmupShift::WarmupShift(int64_t warmup_iter, double init, WarmupShiftOptions options)
    : ParameterShift("WarmupShift", options.attr(), options.warmup_start(), options.optimizer()),
      warmup_iter_(warmup_iter),
      init_(init) {
  check_argument(warmup_iter >= 0, who(), "warmup_iter", "must be >= 0", warmup_iter);
  check_argument(std::isfinite(init), who(), "init", "must be finite", init);
}

std::optional<double> WarmupShift::value_at(int64_t t, double warmup_start) const {
  if (t > warmup_iter_) return std::nullopt;
  return (static_cast<double>(t) * init_ + static_cast<double>(warmup_iter_ - t) * warmup_start) /
         static_cast<double>(warmup_iter_);
}

PolynomialShift::PolynomialShift(double rate, int64_t max_count, PolynomialShiftOptions options)
    : ParameterShift("PolynomialShift", options.attr(), options.init(), options.optimizer()),
      rate_(rate),
      max_count_(max_count),
      target_(options.target()) {
  check_argument(std::isfinite(rate), who(), "rate", "must be finite", rate);
  check_argument(max_count >= 1, who(), "max_count", "must be >= 1", max_count);
}

std::optional<double> PolynomialShift::value_at(int64_t t, double init) const {
  const double decay = std::max(1 - static_cast<double>(t) / static_cast<double>(max_count_), 0.0);
  const double value = init * std::pow(decay, rate_);
  if (!target_) return value;
  // Chainer's PolynomialShift compares target / value, and its sense is the opposite: a
  // decaying schedule (rate > 0) stops where the target exceeds the value.
  return clip(value, *target_, *target_ / value, rate_ > 0);
}

InverseShift::InverseShift(double gamma, double power, InverseShiftOptions options)
    : ParameterShift("InverseShift", options.attr(), options.init(), options.optimizer()),
      gamma_(gamma),
      power_(power),
      target_(options.target()) {
  check_argument(std::isfinite(gamma) && gamma >= 0, who(), "gamma", "must be finite and >= 0",
                 gamma);
  check_argument(std::isfinite(power), who(), "power", "must be finite", power);
}

std::optional<double> InverseShift::value_at(int64_t t, double init) const {
  const double value = init * std::pow(1 + gamma_ * static_cast<double>(t), -power_);
  if (!target_) return value;
  return clip(value, *target_, value / *target_, power_ < 0);
}

}  // namespace tth
