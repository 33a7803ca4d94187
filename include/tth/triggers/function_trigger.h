// FunctionTrigger: fires when a check trigger fires and a user predicate agrees.
//
// `predicate` is consulted only at the iterations where `check` fires (default every
// iteration), so an expensive predicate can be rate-limited.
//
// State: the check trigger's state (the predicate is the user's; it keeps its own).
#pragma once

#include <functional>

#include "tth/trigger.h"

namespace tth {

/// Fires when `check` fires and `predicate(hook)` returns true.
class FunctionTrigger : public Trigger {
 public:
  using Predicate = std::function<bool(const TorchTrainerHook&)>;

  /// REQUIRES: `predicate` is callable. `check` defaults to {1, iteration}.
  explicit FunctionTrigger(Predicate predicate, TriggerRef check = {});

  bool operator()(const TorchTrainerHook& hook) override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  Predicate predicate_;
  std::shared_ptr<Trigger> check_;
};

}  // namespace tth
