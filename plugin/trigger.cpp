#include "tth/trigger.h"

#include "tth/triggers/interval_trigger.h"

namespace tth {

const char* to_string(Unit unit) { return unit == Unit::kEpoch ? "epoch" : "iteration"; }

TriggerRef TriggerRef::interval(double period, Unit unit) {
  return TriggerRef(std::make_shared<IntervalTrigger>(period, unit));
}

TriggerRef TriggerRef::never() {
  TriggerRef ref;
  ref.set_ = true;
  return ref;
}

}  // namespace tth
