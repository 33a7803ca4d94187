// Updater: one training step, as Trainer runs it.
//
// An Updater owns what a step needs (data, model, optimizer) and performs one update per
// call. Trainer (trainer.h) calls `attach` once, so the updater can register its models with
// the manager, saves the updater's state (Stateful) under `state/updater/`, and then calls
// `update` once per iteration inside the manager's observation scope, so `tth::report` works.
//
// Thread safety: called from the training thread only.
#pragma once

#include "tth/stateful.h"

namespace tth {

class TorchTrainerHook;

/// Base class of updaters.
class Updater : public Stateful {
 public:
  /// Iterations in one epoch (may be fractional: dataset size / batch size).
  virtual double iters_per_epoch() const = 0;
  /// Registers models and state objects with the manager. Called once, before training.
  virtual void attach(TorchTrainerHook& hook) { (void)hook; }
  /// Performs one update.
  virtual void update() = 0;
};

}  // namespace tth
