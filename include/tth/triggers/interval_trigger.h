// IntervalTrigger: fires every `period` iterations or epochs (Chainer's semantics).
//
// It fires when floor(previous / period) != floor(current / period), where the positions are
// the iteration count or `epoch_detail`, and `previous` is the position at its previous call
// (0 for a fresh trigger, as in Chainer). So fractional epoch periods ({0.5, epoch}) and
// non-integer iterations per epoch work, and a trigger consulted only now and then fires once
// at each call that follows one or more crossed boundaries, also those before its first call.
// A call at iteration 0 returns false and counts as a call. Epoch positions are compared with
// a 1e-9 tolerance so that 0.3 / 0.1 counts as 3.
//
// State: the previous iteration and epoch_detail it saw (a negative value, an older
// version's "not called yet", counts as 0).
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
  int64_t previous_iteration_ = 0;
  double previous_epoch_detail_ = 0;
};

}  // namespace tth
