// LRSchedulerStep: steps a LibTorch LR scheduler along with training (pytorch-pfn-extras'
// LRScheduler extension).
//
//   auto scheduler = std::make_shared<torch::optim::StepLR>(*optimizer, 30, 0.1);
//   hook.add_optimizer("main", optimizer);
//   hook.extend(std::make_shared<tth::LRSchedulerStep>(scheduler));  // step() every epoch
//
// Each call is one `scheduler->step()`. A LibTorch (1.13) scheduler's state is its step count
// plus the learning rates it wrote into its optimizer. The step count is this extension's
// state ("scheduler/step_count", as ppe nests the scheduler's state under "scheduler"), put
// back into the scheduler on load: the extension alone makes the scheduler resumable, with
// no hook.add_scheduler (registering it there too saves the same count twice, harmlessly). The
// learning rates are the optimizer's state: register the optimizer with the hook (add_optimizer),
// as a resumable training does anyway, and a resumed run continues the schedule exactly. (A
// LibTorch scheduler does not expose its optimizer, so this extension cannot put the rates back
// itself, as the parameter shifts do.)
//
// Defaults, ppe's: trigger {1, epoch} (the constructor's argument), priority kReader, name
// "LRSchedulerStep". Thread safety: the training thread only.
#pragma once

#include <memory>

#include "tth/extension.h"
#include "tth/torch_fwd.h"
#include "tth/trigger.h"

namespace tth {

/// Calls scheduler->step() when its trigger fires; see the header comment.
class LRSchedulerStep : public Extension {
 public:
  /// `trigger` is the default trigger (an unset one means {1, epoch}). Throws tth::Error for
  /// a null scheduler.
  explicit LRSchedulerStep(std::shared_ptr<torch::optim::LRScheduler> scheduler,
                           TriggerRef trigger = {1, epoch});

  void operator()(TorchTrainerHook& hook) override;
  TriggerRef default_trigger() const override { return trigger_; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  /// The scheduler it steps.
  const std::shared_ptr<torch::optim::LRScheduler>& scheduler() const noexcept {
    return scheduler_;
  }

 private:
  std::shared_ptr<torch::optim::LRScheduler> scheduler_;
  TriggerRef trigger_;
};

}  // namespace tth
