// ManualScheduleTrigger: fires at listed iterations or epochs.
//
// Fires when some point lies in (previous position, current position], where the previous
// position is that of its previous call (0 for a fresh trigger, as in Chainer), so a
// sparsely consulted trigger fires once for the points it passed, also those before its
// first call. A call at iteration 0 returns false and counts as a call. `finished()` becomes true
// once the last point is reached, which makes the manager skip the extension's `initialize` on a
// resume after the schedule is over.
//
// State: the previous position (a negative value, an older version's "not called yet",
// counts as 0) and whether the schedule is finished.
#pragma once

#include <vector>

#include "tth/trigger.h"

namespace tth {

/// Fires at the given points; see the header comment.
class ManualScheduleTrigger : public Trigger {
 public:
  /// REQUIRES: `points` non-empty, each > 0, integers when `unit` is iteration.
  ManualScheduleTrigger(std::vector<double> points, Unit unit);

  bool operator()(const TorchTrainerHook& hook) override;
  bool finished() const override { return finished_; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  std::vector<double> points_;
  Unit unit_;
  double previous_ = 0;
  bool finished_ = false;
};

}  // namespace tth
