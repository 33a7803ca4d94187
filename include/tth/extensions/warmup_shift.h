// WarmupShift: raises an optimizer option evenly from `warmup_start` to `init` during the
// first `warmup_iter` calls (Chainer's).
//
//   value(t) = (t * init + (warmup_iter - t) * warmup_start) / warmup_iter  for t <= warmup_iter
//
// and after warmup_iter calls it leaves the option alone (so another extension may take over
// from there). Chainer's roles, with the base's init (parameter_shift.h) being warmup_start:
// `warmup_start` defaults to the optimizer's value at initialize, which sets it in a fresh
// run; `init` is the value reached after the warmup. E.g. the learning rate from 0.001 to
// 0.1 over 500 iterations:
//   hook.extend(std::make_shared<tth::WarmupShift>(500, 0.1,
//                                                  tth::WarmupShiftOptions().warmup_start(1e-3)));
//
// Unlike Chainer's, a resumed WarmupShift puts its last value back (parameter_shift.h)
// instead of resetting the option to warmup_start.
//
// Attribute, optimizer, t, state and defaults: parameter_shift.h.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "tth/extensions/parameter_shift.h"

namespace tth {

/// Options of WarmupShift.
struct WarmupShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The value at t = 0. Default: the optimizer's value at initialize.
  TORCH_ARG(std::optional<double>, warmup_start);
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Moves the option from warmup_start to init during the first warmup_iter calls; see the
/// header comment.
class WarmupShift : public ParameterShift {
 public:
  /// `warmup_iter`: the number of calls the warmup lasts (0: none). Throws tth::Error for
  /// warmup_iter < 0, a non-finite init, or an unknown attr.
  WarmupShift(int64_t warmup_iter, double init, WarmupShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double warmup_start) const override;

 private:
  int64_t warmup_iter_;
  double init_;
};

}  // namespace tth
