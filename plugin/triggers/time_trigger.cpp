#include "tth/triggers/time_trigger.h"

#include <cmath>

#include "check_argument.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

TimeTrigger::TimeTrigger(double seconds) : period_(seconds), next_time_(seconds) {
  check_argument(seconds > 0 && std::isfinite(seconds), "TimeTrigger", "seconds",
                 "must be finite and > 0", seconds);
}

bool TimeTrigger::operator()(const TorchTrainerHook& hook) {
  if (hook.elapsed_time() < next_time_) return false;
  next_time_ += period_;
  return true;
}

StateDict TimeTrigger::state_dict() const {
  StateDict state;
  state.set_double("next_time", next_time_);
  return state;
}

void TimeTrigger::load_state_dict(const StateDict& state) {
  next_time_ = state.get_double("next_time");
}

}  // namespace tth
