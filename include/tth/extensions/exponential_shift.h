// ExponentialShift: multiplies an optimizer option by `rate` at each call (Chainer's).
//
//   value(t) = init * rate^t
//
// With a target, the shift stops there: for rate > 1 a value beyond the target
// (value / target > 1) becomes the target, otherwise a value below it (value / target < 1)
// does (Chainer's comparisons, which also hold for negative values). The typical use is an
// exponential decay of the learning rate:
//   hook.extend(std::make_shared<tth::ExponentialShift>(
//                   0.5, tth::ExponentialShiftOptions().target(1e-4)),
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

/// Options of ExponentialShift.
struct ExponentialShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The value at t = 0. Default: the optimizer's value at initialize.
  TORCH_ARG(std::optional<double>, init);
  /// Where the shift stops. Default: none.
  TORCH_ARG(std::optional<double>, target);
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Sets init * rate^t, clipped at the target; see the header comment.
class ExponentialShift : public ParameterShift {
 public:
  /// Throws tth::Error "ExponentialShift: rate must be finite and >= 0, got -1" for a negative
  /// rate (Chainer's check) or a non-finite one, or for an unknown attr or a non-finite init.
  explicit ExponentialShift(double rate, ExponentialShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double init) const override;

 private:
  double rate_;
  std::optional<double> target_;
};

}  // namespace tth
