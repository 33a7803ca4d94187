// Helpers shared by triggers that consult a "check" trigger and keep a running mean.
#pragma once

#include "tth/reporter.h"
#include "tth/trigger.h"

namespace tth {

/// `ref` when set (possibly never()), else an IntervalTrigger of `period` `unit`s.
std::shared_ptr<Trigger> trigger_or(const TriggerRef& ref, double period, Unit unit);

/// Saves/loads a RunningMean as "sum" and "count".
void save_mean(const RunningMean& mean, StateDict& state);
void load_mean(RunningMean& mean, const StateDict& state);

}  // namespace tth
