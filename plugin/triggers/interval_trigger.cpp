#include "tth/triggers/interval_trigger.h"

#include <fmt/format.h>

#include <cmath>

#include "epoch_tolerance.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

IntervalTrigger::IntervalTrigger(double period, Unit unit) : period_(period), unit_(unit) {
  if (unit != Unit::kIteration && unit != Unit::kEpoch) {
    throw Error(fmt::format("IntervalTrigger: unknown unit {}", static_cast<int>(unit)));
  }
  if (!(period > 0) || !std::isfinite(period)) {
    throw Error(fmt::format("IntervalTrigger: period must be > 0, got {}", period));
  }
  if (unit == Unit::kIteration && period != std::floor(period)) {
    throw Error(fmt::format(
        "IntervalTrigger: an iteration period must be an integer, got {} (use tth::epoch for "
        "fractional epochs)",
        period));
  }
}

bool IntervalTrigger::operator()(const TorchTrainerHook& hook) {
  const int64_t iteration = hook.iteration();
  if (iteration == 0) return false;
  bool fire;
  if (unit_ == Unit::kIteration) {
    const auto period = static_cast<int64_t>(period_);
    const int64_t previous = previous_iteration_ >= 0 ? previous_iteration_ : iteration - 1;
    fire = previous / period != iteration / period;
  } else {
    const double current = hook.epoch_detail();
    const double previous =
        previous_epoch_detail_ >= 0 ? previous_epoch_detail_ : hook.previous_epoch_detail();
    fire = std::floor(previous / period_ + kEpochTolerance) !=
           std::floor(current / period_ + kEpochTolerance);
  }
  previous_iteration_ = iteration;
  previous_epoch_detail_ = hook.epoch_detail();
  return fire;
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
