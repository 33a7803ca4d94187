#include "tth/triggers/manual_schedule_trigger.h"

#include <algorithm>
#include <cmath>

#include "check_argument.h"
#include "epoch_tolerance.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

ManualScheduleTrigger::ManualScheduleTrigger(std::vector<double> points, Unit unit)
    : points_(std::move(points)), unit_(unit) {
  const char* who = "ManualScheduleTrigger";
  check_argument(unit == Unit::kIteration || unit == Unit::kEpoch, who, "unit",
                 "must be iteration or epoch", static_cast<int>(unit));
  check_argument(!points_.empty(), who, "points", "must not be empty");
  for (double point : points_) {
    check_argument(point > 0 && std::isfinite(point), who, "points", "must be finite and > 0",
                   point);
    check_argument(unit == Unit::kEpoch || point == std::floor(point), who, "points",
                   "must be integers for iterations", point);
  }
}

bool ManualScheduleTrigger::operator()(const TorchTrainerHook& hook) {
  const bool by_epoch = unit_ == Unit::kEpoch;
  const double tolerance = by_epoch ? kEpochTolerance : 0;
  const double current = by_epoch ? hook.epoch_detail() : static_cast<double>(hook.iteration());
  // A negative position (an older state's "not called yet") counts as a fresh trigger's 0.
  const double previous = std::max(previous_, 0.0);
  const bool fire = std::any_of(points_.begin(), points_.end(), [&](double point) {
    return previous + tolerance < point && point <= current + tolerance;
  });
  previous_ = current;
  finished_ = current + tolerance >= *std::max_element(points_.begin(), points_.end());
  return fire;
}

StateDict ManualScheduleTrigger::state_dict() const {
  StateDict state;
  state.set_double("previous", previous_);
  state.set_bool("finished", finished_);
  return state;
}

void ManualScheduleTrigger::load_state_dict(const StateDict& state) {
  previous_ = state.get_double("previous");
  finished_ = state.get_bool("finished");
}

}  // namespace tth
