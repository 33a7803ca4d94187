#include "tth/triggers/once_trigger.h"

namespace tth {

OnceTrigger::OnceTrigger(bool call_on_resume) : resumed_(false), call_on_resume_(call_on_resume) {}

bool OnceTrigger::operator()(const TorchTrainerHook& hook) {
  (void)hook;
  const bool fire = first_ || resumed_;
  first_ = false;
  resumed_ = false;
  return fire;
}

StateDict OnceTrigger::state_dict() const {
  StateDict state;
  state.set_bool("first", first_);
  return state;
}

void OnceTrigger::load_state_dict(const StateDict& state) {
  first_ = state.get_bool("first");
  resumed_ = call_on_resume_;
}

}  // namespace tth
