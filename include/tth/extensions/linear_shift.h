// LinearShift: moves an optimizer option linearly from one value to another (Chainer's).
//
// With value_range = (v1, v2) and time_range = (t1, t2):
//   value(t) = v1                                    for t <= t1
//            = v1 + (t - t1) / (t2 - t1) * (v2 - v1)  for t1 < t < t2
//            = v2                                    for t >= t2
// and initialize sets value(0) in a fresh run (the optimizer's own value is not used: this
// shift has no init). The typical use is warming up the momentum:
//   hook.extend(std::make_shared<tth::LinearShift>(
//       std::pair{0.5, 0.9}, std::pair<int64_t, int64_t>{0, 1000},
//       tth::LinearShiftOptions().attr("momentum")));
//
// Attribute, optimizer, t, state and defaults: parameter_shift.h.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "tth/extensions/parameter_shift.h"

namespace tth {

/// Options of LinearShift.
struct LinearShiftOptions {
  /// The optimizer option to shift (parameter_shift.h lists them). Default "lr".
  TORCH_ARG(std::string, attr) = "lr";
  /// The optimizer. Default: the hook's optimizer "main".
  TORCH_ARG(std::shared_ptr<torch::optim::Optimizer>, optimizer);
};

/// Moves the option from value_range.first to .second during calls time_range.first to
/// .second; see the header comment.
class LinearShift : public ParameterShift {
 public:
  /// Throws tth::Error for non-finite values, time_range.first > time_range.second, or an
  /// unknown attr.
  LinearShift(std::pair<double, double> value_range, std::pair<int64_t, int64_t> time_range,
              LinearShiftOptions options = {});

 protected:
  std::optional<double> value_at(int64_t t, double init) const override;
  double start_value(double init) const override;

 private:
  double compute(int64_t t) const;

  std::pair<double, double> value_range_;
  std::pair<int64_t, int64_t> time_range_;
};

}  // namespace tth
