// IntervalTrigger: fires every `period` iterations or epochs (Chainer's semantics).
//
// It fires when floor(previous / period) != floor(current / period), where the positions are
// the iteration count or `epoch_detail`. So fractional epoch periods ({0.5, epoch}) and
// non-integer iterations per epoch work, and a trigger that is consulted only now and then
// still fires once for a boundary crossed since its previous call. It never fires before the
// first iteration has completed (Chainer fires at iteration 0 when called there). Epoch
// positions are compared with a 1e-9 tolerance so that 0.3 / 0.1 counts as 3.
//
// State: the previous iteration and epoch_detail it saw.
#pragma once

#include "tth/trigger.h"

namespace tth {

/// Fires every `period` units; see the header comment.
class IntervalTrigger : public Trigger {
 public:
  /// REQUIRES: period > 0; an integer when `unit` is iteration. Throws tth::Error otherwise.
  IntervalTrigger(double period, Unit unit);

  bool operator()(const TorchTrainerHook& hook) override;
  std::optional<Duration> training_length() const override { return Duration{period_, unit_}; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  double period() const noexcept { return period_; }
  Unit unit() const noexcept { return unit_; }

 private:
  double period_;
  Unit unit_;
  int64_t previous_iteration_ = -1;  // -1: not called yet
  double previous_epoch_detail_ = -1;
};

}  // namespace tth
