#include "tth/triggers/interval_trigger.h"

#include <algorithm>
#include <cmath>

#include "check_argument.h"
#include "epoch_tolerance.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

IntervalTrigger::IntervalTrigger(double period, Unit unit) : period_(period), unit_(unit) {
  check_argument(unit == Unit::kIteration || unit == Unit::kEpoch, "IntervalTrigger", "unit",
                 "must be iteration or epoch", static_cast<int>(unit));
  check_argument(period > 0 && std::isfinite(period), "IntervalTrigger", "period",
                 "must be finite and > 0", period);
  check_argument(unit == Unit::kEpoch || period == std::floor(period), "IntervalTrigger", "period",
                 "must be an integer for iterations (use tth::epoch for fractions)", period);
}

bool IntervalTrigger::operator()(const TorchTrainerHook& hook) {
  // A negative position (an older state's "not called yet") counts as a fresh trigger's 0.
  bool fire;
  if (unit_ == Unit::kIteration) {
    const auto period = static_cast<int64_t>(period_);
    fire = std::max<int64_t>(previous_iteration_, 0) / period != hook.iteration() / period;
  } else {
    fire = std::floor(std::max(previous_epoch_detail_, 0.0) / period_ + kEpochTolerance) !=
           std::floor(hook.epoch_detail() / period_ + kEpochTolerance);
  }
  previous_iteration_ = hook.iteration();
  previous_epoch_detail_ = hook.epoch_detail();
  return fire;
}

TriggerRef TriggerRef::interval(double period, Unit unit) {
  return TriggerRef(std::make_shared<IntervalTrigger>(period, unit));
}

StateDict IntervalTrigger::state_dict() const {
  StateDict state;
  state.set_int("previous_iteration", previous_iteration_);
  state.set_double("previous_epoch_detail", previous_epoch_detail_);
  return state;
}

void IntervalTrigger::load_state_dict(const StateDict& state) {
  previous_iteration_ = state.get_int("previous_iteration");
  previous_epoch_detail_ = state.get_double("previous_epoch_detail");
}

}  // namespace tth
