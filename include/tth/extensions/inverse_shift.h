// InverseShift: decays an optimizer option as Caffe's "inv" policy does (Chainer's).
//
//   value(t) = init * (1 + gamma * t)^(-power)
//
// With a target, the shift stops there: for power < 0 (a growing value) a value beyond the
// target (value / target > 1) becomes the target, otherwise a value below it
// (value / target < 1) does.
//   hook.extend(std::make_shared<tth::InverseShift>(1e-4, 0.75));
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

/// Options of InverseShift.
struct InverseShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The value at t = 0. Default: the optimizer's value at initialize.
  TORCH_ARG(std::optional<double>, init);
  /// Where the shift stops. Default: none.
  TORCH_ARG(std::optional<double>, target);
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Sets init * (1 + gamma * t)^(-power), clipped at the target; see the header comment.
class InverseShift : public ParameterShift {
 public:
  /// Throws tth::Error "InverseShift: gamma must be finite and >= 0, got -1" for a negative
  /// gamma (Chainer's check) or a non-finite one, for a non-finite power, or for an unknown attr
  /// or a non-finite init.
  InverseShift(double gamma, double power, InverseShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double init) const override;

 private:
  double gamma_;
  double power_;
  std::optional<double> target_;
};

}  // namespace tth
