// TimeTrigger: fires every `seconds` of training time.
//
// Fires when the manager's elapsed time (which a resume continues, see torch_trainer_hook.h)
// has passed the next deadline, then moves the deadline by one period (Chainer's rule): after
// a pause longer than a period it fires on the following iterations until it has caught up.
//
// State: the next deadline.
#pragma once

#include "tth/trigger.h"

namespace tth {

/// Fires every `seconds` of elapsed training time.
class TimeTrigger : public Trigger {
 public:
  /// REQUIRES: seconds > 0.
  explicit TimeTrigger(double seconds);

  bool operator()(const TorchTrainerHook& hook) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  double period_;
  double next_time_;
};

}  // namespace tth
