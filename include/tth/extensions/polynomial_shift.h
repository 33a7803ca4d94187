// PolynomialShift: decays an optimizer option polynomially to zero over `max_count` calls
// (Chainer's).
//
//   value(t) = init * max(1 - t / max_count, 0)^rate
//
// `max_count` is required, as in Chainer (which does not derive it from the stop trigger):
// the number of calls until the value reaches zero; with the default trigger
// {1, iteration} that is the training length in iterations. With a target, the shift stops
// there: for rate > 0 a value below the target (target / value > 1) becomes the target,
// otherwise a value beyond it (target / value < 1) does. Where the value reaches 0 (or
// infinity, for rate < 0) the comparison is IEEE's, so the value becomes the target; Chainer
// raises ZeroDivisionError there. E.g. "poly" decay of the learning rate:
//   hook.extend(std::make_shared<tth::PolynomialShift>(0.9, total_iterations));
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

/// Options of PolynomialShift.
struct PolynomialShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The value at t = 0. Default: the optimizer's value at initialize.
  TORCH_ARG(std::optional<double>, init);
  /// Where the shift stops. Default: none.
  TORCH_ARG(std::optional<double>, target);
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Sets init * max(1 - t / max_count, 0)^rate, clipped at the target; see the header comment.
class PolynomialShift : public ParameterShift {
 public:
  /// Throws tth::Error for max_count < 1 (Chainer divides by it), a non-finite rate, or an
  /// unknown attr.
  PolynomialShift(double rate, int64_t max_count, PolynomialShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double init) const override;

 private:
  double rate_;
  int64_t max_count_;
  std::optional<double> target_;
};

}  // namespace tth
