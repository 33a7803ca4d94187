#include "tth/extensions/micro_average.h"

#include <fmt/format.h>

#include <utility>

#include "check_argument.h"
#include "triggers/check_trigger.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

MicroAverage::MicroAverage(std::string numerator_key, std::string denominator_key,
                           std::string result_key, TriggerRef trigger)
    : numerator_key_(std::move(numerator_key)),
      denominator_key_(std::move(denominator_key)),
      result_key_(std::move(result_key)),
      trigger_(trigger_or(trigger, 1, epoch)) {
  const char* who = "MicroAverage";
  check_argument(!numerator_key_.empty(), who, "numerator_key", "must not be empty");
  check_argument(!denominator_key_.empty(), who, "denominator_key", "must not be empty");
  check_argument(!result_key_.empty(), who, "result_key", "must not be empty");
  check_argument(trigger_ != nullptr, who, "trigger",
                 "must fire sometimes (TriggerRef::never() would never report)");
}

void MicroAverage::operator()(TorchTrainerHook& hook) {
  Observation& observation = hook.observation();
  auto numerator = observation.find(numerator_key_);
  auto denominator = observation.find(denominator_key_);
  if (numerator == observation.end() || denominator == observation.end()) return;
  numerator_ += numerator->second.value();
  denominator_ += denominator->second.value();
  if (!(*trigger_)(hook)) return;
  if (denominator_ == 0) {
    throw Error(fmt::format(
        "MicroAverage: the sum of '{}' over the interval is 0, so '{}' / '{}' for '{}' is "
        "undefined at iteration {}; report the number of examples as the denominator",
        denominator_key_, numerator_key_, denominator_key_, result_key_, hook.iteration()));
  }
  const double result = numerator_ / denominator_;
  numerator_ = 0;
  denominator_ = 0;
  observation.insert_or_assign(result_key_, result);
}

StateDict MicroAverage::state_dict() const {
  StateDict state;
  state.set_double("numerator", numerator_);
  state.set_double("denominator", denominator_);
  state.merge("trigger", trigger_->state_dict());
  return state;
}

void MicroAverage::load_state_dict(const StateDict& state) {
  trigger_->load_state_dict(state.sub("trigger"));
  numerator_ = state.get_double("numerator");
  denominator_ = state.get_double("denominator");
}

}  // namespace tth
