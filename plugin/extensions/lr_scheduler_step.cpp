#include "tth/extensions/lr_scheduler_step.h"

#include <torch/optim/schedulers/lr_scheduler.h>

#include <utility>

#include "check_argument.h"
#include "scheduler_state.h"
#include "tth/state_layout.h"

namespace tth {

namespace {
// ppe nests the scheduler's own state under this key.
constexpr const char* kScheduler = "scheduler";
}  // namespace

LRSchedulerStep::LRSchedulerStep(std::shared_ptr<torch::optim::LRScheduler> scheduler,
                                 TriggerRef trigger)
    : scheduler_(std::move(scheduler)),
      trigger_(trigger.is_set() ? std::move(trigger) : TriggerRef(1, epoch)) {
  check_argument(scheduler_ != nullptr, "LRSchedulerStep", "scheduler", "must not be null");
}

void LRSchedulerStep::operator()(TorchTrainerHook&) { scheduler_->step(); }

StateDict LRSchedulerStep::state_dict() const {
  StateDict state;
  state.merge(kScheduler, scheduler_state_dict(*scheduler_));
  return state;
}

void LRSchedulerStep::load_state_dict(const StateDict& state) {
  StateDict own = state.sub(kScheduler);
  try {
    load_scheduler_state(*scheduler_, own);
  } catch (const StateError& error) {
    throw StateError({}, state_layout::key(kScheduler, error.key()), error.problem());
  }
}

}  // namespace tth
