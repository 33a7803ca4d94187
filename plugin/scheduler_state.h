// The state of a torch::optim::LRScheduler as a StateDict: its step count (state_layout.h's
// "step_count"). LibTorch 1.13 keeps the count protected and gives schedulers no
// state_dict; everything else a scheduler computes from is its optimizer's learning rates,
// which the optimizer's state holds. This is the one place that reaches the count, for the
// LRSchedulerStep extension and for TorchTrainerHook::add_scheduler. Private.
#pragma once

#include <torch/optim/schedulers/lr_scheduler.h>

#include <cstdint>
#include <limits>
#include <string>

#include "tth/error.h"
#include "tth/state_dict.h"
#include "tth/state_layout.h"

namespace tth {

namespace scheduler_state_detail {
// A member pointer named through a derived class reaches the protected member without
// changing the object (no copy, no layout assumption).
struct Access : torch::optim::LRScheduler {
  static unsigned& step_count(torch::optim::LRScheduler& scheduler) {
    return scheduler.*(&Access::step_count_);
  }
  static unsigned step_count(const torch::optim::LRScheduler& scheduler) {
    return scheduler.*(&Access::step_count_);
  }
};
}  // namespace scheduler_state_detail

/// {"step_count": the number of step() calls so far}.
inline StateDict scheduler_state_dict(const torch::optim::LRScheduler& scheduler) {
  StateDict state;
  state.set_int(std::string(state_layout::kStepCount),
                scheduler_state_detail::Access::step_count(scheduler));
  return state;
}

/// Sets the step count from a state of scheduler_state_dict; a state without it (a
/// non-strict load) keeps the current count. Throws StateError (no operation named: the
/// caller's load names it) for a count that does not fit the scheduler's counter.
inline void load_scheduler_state(torch::optim::LRScheduler& scheduler, const StateDict& state) {
  const std::string key(state_layout::kStepCount);
  if (!state.contains(key)) return;
  const int64_t count = state.get_int(key);
  if (count < 0 || static_cast<uint64_t>(count) > std::numeric_limits<unsigned>::max()) {
    throw StateError({}, key, "must be a step count >= 0, got " + std::to_string(count));
  }
  scheduler_state_detail::Access::step_count(scheduler) = static_cast<unsigned>(count);
}

}  // namespace tth
