#include "tth/triggers/function_trigger.h"

#include "check_argument.h"
#include "triggers/check_trigger.h"

namespace tth {

FunctionTrigger::FunctionTrigger(Predicate predicate, TriggerRef check)
    : predicate_(std::move(predicate)), check_(trigger_or(check, 1, iteration)) {
  check_argument(static_cast<bool>(predicate_), "FunctionTrigger", "predicate", "must be callable");
}

bool FunctionTrigger::operator()(const TorchTrainerHook& hook) {
  if (!check_ || !(*check_)(hook)) return false;
  return predicate_(hook);
}

StateDict FunctionTrigger::state_dict() const {
  StateDict state;
  if (check_) state.merge("check", check_->state_dict());
  return state;
}

void FunctionTrigger::load_state_dict(const StateDict& state) {
  if (check_) check_->load_state_dict(state.sub("check"));
}

}  // namespace tth
