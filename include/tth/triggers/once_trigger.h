// OnceTrigger: fires on the first evaluation only.
//
// With `call_on_resume`, it also fires once more on the first evaluation after a resume (the
// saved state says it already fired, but a resumed process may need the extension to run
// again, e.g. to redraw a plot). `finished()` is true once it has nothing left to fire.
//
// State: whether the first firing is still pending.
#pragma once

#include "tth/trigger.h"

namespace tth {

/// Fires once; see the header comment.
class OnceTrigger : public Trigger {
 public:
  explicit OnceTrigger(bool call_on_resume = false);

  bool operator()(const TorchTrainerHook& hook) override;
  bool finished() const override { return !(first_ || resumed_); }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  bool first_ = true;
  bool resumed_;  // fire once after load_state_dict
  bool call_on_resume_;
};

}  // namespace tth
