#include "tth/trainer.h"

#include "check_argument.h"
#include "tth/error.h"

namespace tth {

namespace {
HookOptions options_for(const std::shared_ptr<Updater>& updater, TriggerRef stop_trigger,
                        std::string out, std::shared_ptr<ProcessGroup> process_group) {
  check_argument(updater != nullptr, "Trainer", "updater", "must not be null");
  check_argument(stop_trigger.get() != nullptr, "Trainer", "stop_trigger",
                 "must be set, e.g. {10, tth::epoch}");
  return HookOptions(updater->iters_per_epoch())
      .stop_trigger(std::move(stop_trigger))
      .out(std::move(out))
      .process_group(std::move(process_group));
}
}  // namespace

Trainer::Trainer(std::shared_ptr<Updater> updater, TriggerRef stop_trigger, std::string out,
                 std::shared_ptr<ProcessGroup> process_group)
    : updater_(updater),
      hook_(
          options_for(updater, std::move(stop_trigger), std::move(out), std::move(process_group))) {
  updater_->attach(hook_);
  hook_.add_state("updater", updater_);
}

void Trainer::run() {
  if (ran_) {
    throw Error(
        "Trainer::run: this Trainer already ran; build a new Trainer and load a saved "
        "state to continue training");
  }
  ran_ = true;
  while (!hook_.done()) hook_.run_iteration([this] { updater_->update(); });
  hook_.finalize();
}

}  // namespace tth
