// observe_value / observe_lr: record a value of the training into the observation.
//
// Chainer's observe_value and observe_lr. `observe_value(key, fn)` makes an extension that,
// when its trigger fires (default every epoch), puts `fn(hook)` into the current observation
// under `key`, where LogReport, PrintReport and PlotReport pick it up. Its priority is
// kWriter, so those readers see the value in the same iteration. `observe_lr` observes the
// learning rate of the first parameter group of a registered optimizer (as Chainer's reads
// `optimizer.lr`), e.g. to log what an LR shift or scheduler did:
//   hook.extend(tth::observe_lr());                 // "lr" of optimizer "main", every epoch
//   hook.extend(tth::observe_lr("main", "lr"), tth::ExtendOptions().trigger({100,
//   tth::iteration}));
//
// Default names: "observe_value" and "observe_lr" (a second one gets "_1", see extend).
// State: none. Thread safety: training thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "tth/extension.h"
#include "tth/trigger.h"

namespace tth {

/// An extension that reports `fn(hook)` under `key` when `trigger` fires; priority kWriter.
/// Throws tth::Error for an empty key or a non-callable `fn`.
std::shared_ptr<Extension> observe_value(std::string key,
                                         std::function<double(TorchTrainerHook&)> fn,
                                         TriggerRef trigger = {1, epoch});

/// observe_value of the learning rate of the first parameter group of the optimizer
/// registered as `optimizer_name` (TorchTrainerHook::add_optimizer). When it fires without
/// such an optimizer it throws tth::Error naming it and listing the registered ones.
std::shared_ptr<Extension> observe_lr(std::string optimizer_name = "main", std::string key = "lr",
                                      TriggerRef trigger = {1, epoch});

}  // namespace tth
