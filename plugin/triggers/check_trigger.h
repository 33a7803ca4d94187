// The check trigger of triggers that decide at intervals (best value, early stopping,
// function). Private.
#pragma once

#include <memory>

#include "tth/trigger.h"

namespace tth {

/// `ref` when set (possibly never()), else an IntervalTrigger of `period` `unit`s.
std::shared_ptr<Trigger> trigger_or(const TriggerRef& ref, double period, Unit unit);

}  // namespace tth
