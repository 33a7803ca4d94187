// TimeTrigger: fires every `seconds` of training time.
//
// Fires when the manager's elapsed time (which a resume continues, see torch_trainer_hook.h)
// has passed the next deadline, then moves the deadline by one period. After a long pause it
// fires once, not once per missed period.
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
