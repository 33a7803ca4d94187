#include "triggers/check_trigger.h"

#include "tth/triggers/interval_trigger.h"

namespace tth {

std::shared_ptr<Trigger> trigger_or(const TriggerRef& ref, double period, Unit unit) {
  if (ref.is_set()) return ref.get();
  return std::make_shared<IntervalTrigger>(period, unit);
}

}  // namespace tth
