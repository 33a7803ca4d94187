#include "tth/trigger.h"

namespace tth {

const char* to_string(Unit unit) { return unit == Unit::kEpoch ? "epoch" : "iteration"; }

// TriggerRef::interval is defined with IntervalTrigger, so the base knows no derived trigger.

TriggerRef TriggerRef::never() {
  TriggerRef ref;
  ref.set_ = true;
  return ref;
}

}  // namespace tth
