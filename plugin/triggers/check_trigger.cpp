#include "triggers/check_trigger.h"

#include "tth/triggers/interval_trigger.h"

namespace tth {

std::shared_ptr<Trigger> trigger_or(const TriggerRef& ref, double period, Unit unit) {
  if (ref.is_set()) return ref.get();
  return std::make_shared<IntervalTrigger>(period, unit);
}

void save_mean(const RunningMean& mean, StateDict& state) {
  state.set_double("sum", mean.sum);
  state.set_int("count", mean.count);
}

void load_mean(RunningMean& mean, const StateDict& state) {
  mean.sum = state.get_double("sum");
  mean.count = state.get_int("count");
}

}  // namespace tth
