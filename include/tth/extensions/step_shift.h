// StepShift: multiplies an optimizer option by `gamma` every `step` calls (Chainer's).
//
//   value(t) = init * gamma^floor(t / step)
//
// With a target, the shift stops there: for gamma > 1 a value beyond the target
// (value / target > 1) becomes the target, otherwise a value below it (value / target < 1)
// does. E.g. the learning rate divided by 10 every 30 epochs:
//   hook.extend(std::make_shared<tth::StepShift>(0.1, 30),
//               tth::ExtendOptions().trigger({1, tth::epoch}));
//
// Attribute, optimizer, t, init, state and defaults: parameter_shift.h.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "tth/extensions/parameter_shift.h"

namespace tth {

/// Options of StepShift.
struct StepShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The value at t = 0. Default: the optimizer's value at initialize.
  TORCH_ARG(std::optional<double>, init);
  /// Where the shift stops. Default: none.
  TORCH_ARG(std::optional<double>, target);
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Sets init * gamma^floor(t / step), clipped at the target; see the header comment.
class StepShift : public ParameterShift {
 public:
  /// Throws tth::Error for step < 1 (Chainer divides by it), a non-finite gamma or an
  /// unknown attr.
  StepShift(double gamma, int64_t step, StepShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double init) const override;

 private:
  double gamma_;
  int64_t step_;
  std::optional<double> target_;
};

}  // namespace tth
