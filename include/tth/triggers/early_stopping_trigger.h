// EarlyStoppingTrigger: a stop trigger that ends training when a metric stops improving.
//
// Every iteration it adds `monitor` (when reported) to a running mean. It fires when
// `max_trigger` fires (the longest training allowed), or when, at `patience` consecutive
// checks of the `check` trigger, the mean did not improve on the best so far. Unlike Chainer
// and pytorch-pfn-extras, the best value and the patience count are saved, so a resumed run
// stops where the uninterrupted one would have. A check at which `monitor` was never
// reported throws tth::Error naming it.
//
// State: the check and max triggers' states, the running sum and count, the best
// value and the number of checks without improvement.
#pragma once

#include <torch/arg.h>

#include <string>

#include "tth/mode.h"
#include "tth/reporter.h"
#include "tth/trigger.h"

namespace tth {

/// Options of EarlyStoppingTrigger.
struct EarlyStoppingOptions {
  /// The observed key. Default "main/loss".
  TORCH_ARG(std::string, monitor) = "main/loss";
  /// Checks without improvement before stopping; >= 1. Default 3.
  TORCH_ARG(int64_t, patience) = 3;
  /// Direction of improvement. Default Mode::kAuto.
  TORCH_ARG(Mode, mode) = Mode::kAuto;
  /// When to compare. Default {1, epoch}.
  TORCH_ARG(TriggerRef, check);
  /// Stop at the latest here. Default {100, epoch}.
  TORCH_ARG(TriggerRef, max_trigger);
};

/// Stops training when `monitor` stops improving; see the header comment.
class EarlyStoppingTrigger : public Trigger {
 public:
  explicit EarlyStoppingTrigger(EarlyStoppingOptions options = {});

  bool operator()(const TorchTrainerHook& hook) override;
  std::optional<Duration> training_length() const override;
  /// True once `patience` checks passed without improvement.
  bool finished() const override { return stale_checks_ >= patience_; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  /// The best mean so far (±infinity before the first check).
  double best() const noexcept { return best_; }
  /// Checks in a row without improvement.
  int64_t checks_without_improvement() const noexcept { return stale_checks_; }

 private:
  std::string monitor_;
  int64_t patience_;
  bool maximize_;
  std::shared_ptr<Trigger> check_;
  std::shared_ptr<Trigger> max_;
  RunningMean mean_;
  double best_;
  int64_t stale_checks_ = 0;
};

}  // namespace tth
