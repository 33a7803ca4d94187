// MaxValueTrigger / MinValueTrigger: fire when a reported value reaches a new best.
//
// Every iteration the trigger adds `key` from the observation (when reported) to a running
// mean. When its `check` trigger fires (default {1, epoch}) it compares that mean with the
// best so far, fires if it is better (the first check always is), and starts a new mean.
// Typical use: snapshot the model whenever "validation/main/accuracy" improves; give the
// extension that reports the key (an evaluator) a higher priority so it reports first.
//
// A check at which `key` was never reported throws tth::Error naming the key: a misspelled
// key must not silently disable the trigger.
//
// State: the check trigger's state, the running sum and count, and the best value.
#pragma once

#include <functional>
#include <string>

#include "tth/reporter.h"
#include "tth/trigger.h"

namespace tth {

/// Fires when the mean of `key` over a check interval beats the best so far.
class BestValueTrigger : public Trigger {
 public:
  /// `better(candidate, best)` says whether candidate improves on best.
  BestValueTrigger(std::string key, std::function<bool(double, double)> better,
                   TriggerRef check = {});

  bool operator()(const TorchTrainerHook& hook) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  /// The best mean seen so far, if any check happened.
  std::optional<double> best() const;

 private:
  std::string key_;
  std::function<bool(double, double)> better_;
  std::shared_ptr<Trigger> check_;
  RunningMean mean_;
  double best_ = 0;
  bool has_best_ = false;
};

/// Fires when the mean of `key` reaches a new maximum (e.g. accuracy).
class MaxValueTrigger : public BestValueTrigger {
 public:
  explicit MaxValueTrigger(std::string key, TriggerRef check = {});
};

/// Fires when the mean of `key` reaches a new minimum (e.g. loss).
class MinValueTrigger : public BestValueTrigger {
 public:
  explicit MinValueTrigger(std::string key, TriggerRef check = {});
};

}  // namespace tth
