#include "tth/triggers/manual_schedule_trigger.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "epoch_tolerance.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

ManualScheduleTrigger::ManualScheduleTrigger(std::vector<double> points, Unit unit)
    : points_(std::move(points)), unit_(unit) {
  if (unit != Unit::kIteration && unit != Unit::kEpoch) {
    throw Error(fmt::format("ManualScheduleTrigger: unknown unit {}", static_cast<int>(unit)));
  }
  if (points_.empty()) throw Error("ManualScheduleTrigger: points must not be empty");
  for (double point : points_) {
    if (!(point > 0) || !std::isfinite(point)) {
      throw Error(fmt::format("ManualScheduleTrigger: points must be > 0, got {}", point));
    }
    if (unit == Unit::kIteration && point != std::floor(point)) {
      throw Error(fmt::format("ManualScheduleTrigger: iteration points must be integers, got {}",
                              point));
    }
  }
}

bool ManualScheduleTrigger::operator()(const TorchTrainerHook& hook) {
  if (hook.iteration() == 0) return false;
  const bool by_epoch = unit_ == Unit::kEpoch;
  const double tolerance = by_epoch ? kEpochTolerance : 0;
  const double current = by_epoch ? hook.epoch_detail() : static_cast<double>(hook.iteration());
  double previous = previous_;
  if (previous < 0) {
    previous = by_epoch ? hook.previous_epoch_detail() : static_cast<double>(hook.iteration() - 1);
  }
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
