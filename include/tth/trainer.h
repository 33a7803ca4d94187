// Trainer: a ready training loop for an Updater, built on TorchTrainerHook.
//
//   auto updater = std::make_shared<tth::StandardUpdater>(std::move(loader), dataset_size,
//                                                         model, optimizer, loss);
//   tth::Trainer trainer(updater, {10, tth::epoch}, "result");
//   trainer.extend(my_extension, tth::ExtendOptions().trigger({1, tth::epoch}));
//   trainer.run();
//
// `run()` is exactly the user-owned loop of torch_trainer_hook.h with `updater->update()` as
// the step, so extensions behave the same in both (see extension.h for the protocol). The
// updater's state is saved under `state/updater/`. A Trainer runs once: to continue, build a
// new Trainer and load a saved state.
//
// Thread safety: none.
#pragma once

#include <memory>
#include <string>

#include "tth/torch_trainer_hook.h"
#include "tth/updater.h"

namespace tth {

/// Runs an Updater until the stop trigger fires; see the header comment.
class Trainer {
 public:
  /// REQUIRES: a non-null updater and a stop trigger (not never()). With a process group, the
  /// hook is a rank of that data-parallel job (HookOptions::process_group; StandardUpdater then
  /// averages the gradients across the ranks).
  Trainer(std::shared_ptr<Updater> updater, TriggerRef stop_trigger, std::string out = "result",
          std::shared_ptr<ProcessGroup> process_group = nullptr);

  /// Same as TorchTrainerHook::extend.
  std::string extend(std::shared_ptr<Extension> extension, const ExtendOptions& options) {
    return hook_.extend(std::move(extension), options);
  }
  /// Same as TorchTrainerHook::extend, the positional form.
  std::string extend(std::shared_ptr<Extension> extension,
                     std::optional<std::string> name = std::nullopt, TriggerRef trigger = {},
                     std::optional<int> priority = std::nullopt,
                     bool call_before_training = false) {
    return hook_.extend(std::move(extension), std::move(name), std::move(trigger), priority,
                        call_before_training);
  }

  /// Trains until the stop trigger fires. Throws tth::Error when called a second time; an
  /// exception from the updater or an extension propagates after the error path ran.
  void run();

  /// The manager: progress, observation, state_dict, models.
  TorchTrainerHook& hook() noexcept { return hook_; }
  const TorchTrainerHook& hook() const noexcept { return hook_; }
  Updater& updater() noexcept { return *updater_; }

 private:
  std::shared_ptr<Updater> updater_;
  TorchTrainerHook hook_;
  bool ran_ = false;
};

}  // namespace tth
