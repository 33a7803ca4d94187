#include "tth/reporter.h"

#include <fmt/format.h>

#include "tth/error.h"

namespace tth {

namespace {
thread_local Observation* active_observation = nullptr;
}  // namespace

ObservedValue::ObservedValue(const at::Tensor& tensor)
    : tensor_(tensor.detach()), converted_(false) {
  if (tensor_.numel() != 1) {
    throw Error(fmt::format("report: value must be a tensor of one element, got {} elements",
                            tensor_.numel()));
  }
}

double ObservedValue::value() const {
  if (!converted_) {
    value_ = tensor_.item<double>();
    converted_ = true;
  }
  return value_;
}

void report(const std::string& key, ObservedValue value) {
  if (active_observation == nullptr) return;
  active_observation->insert_or_assign(key, std::move(value));
}

void report(std::initializer_list<std::pair<const std::string, ObservedValue>> values) {
  for (const auto& [key, value] : values) report(key, value);
}

void RunningMean::add(const Observation& observation, const std::string& key) {
  auto found = observation.find(key);
  if (found == observation.end()) return;
  sum += found->second.value();
  ++count;
}

StateDict RunningMean::state_dict() const {
  StateDict state;
  state.set_double("sum", sum);
  state.set_int("count", count);
  return state;
}

void RunningMean::load_state_dict(const StateDict& state) {
  sum = state.get_double("sum");
  count = state.get_int("count");
}

double RunningMean::take(const std::string& key, const char* who) {
  if (count == 0) {
    throw Error(
        fmt::format("{}: key '{}' was never reported during the check interval; report "
                    "it (tth::report) or fix the key",
                    who, key));
  }
  double mean = sum / static_cast<double>(count);
  sum = 0;
  count = 0;
  return mean;
}

ObservationScope::ObservationScope(Observation& observation) : previous_(active_observation) {
  active_observation = &observation;
}

ObservationScope::~ObservationScope() { active_observation = previous_; }

}  // namespace tth
