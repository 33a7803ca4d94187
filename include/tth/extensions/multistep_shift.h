// MultistepShift: multiplies an optimizer option by `gamma` at each of several calls
// (Chainer's).
//
//   value(t) = init * gamma^(number of milestones s in step_value with s <= t)
//
// With step_value = {s1, s2, s3}: calls 1 .. s1 - 1 keep init, calls s1 .. s2 - 1 set
// init * gamma, and so on; from s3 on, init * gamma^3. E.g. the learning rate divided by 10
// after 30 and after 80 epochs:
//   hook.extend(std::make_shared<tth::MultistepShift>(0.1, std::vector<int64_t>{30, 80}),
//               tth::ExtendOptions().trigger({1, tth::epoch}));
//
// Chainer saves the number of milestones passed ("_current_step"); here it follows from t.
// Unlike Chainer's, a resumed MultistepShift puts its last value back (parameter_shift.h)
// instead of resetting the option to init until the next call.
//
// Attribute, optimizer, t, init, state and defaults: parameter_shift.h.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tth/extensions/parameter_shift.h"

namespace tth {

/// Options of MultistepShift.
struct MultistepShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The value at t = 0. Default: the optimizer's value at initialize.
  TORCH_ARG(std::optional<double>, init);
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Sets init * gamma^(milestones passed); see the header comment.
class MultistepShift : public ParameterShift {
 public:
  /// `step_value`: the calls from which each further factor applies. Throws tth::Error when
  /// it is empty, not strictly increasing or holds a value < 1, for a non-finite gamma, or an
  /// unknown attr.
  MultistepShift(double gamma, std::vector<int64_t> step_value, MultistepShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double init) const override;

 private:
  double gamma_;
  std::vector<int64_t> step_value_;
};

}  // namespace tth
