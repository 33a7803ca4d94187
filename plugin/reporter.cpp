#include "tth/reporter.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

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

void DictSummary::add(const Observation& observation) {
  for (const auto& [key, value] : observation) add(key, value.value());
}

void DictSummary::add(const std::string& key, double value) {
  RunningMean& mean = summaries_[key];
  mean.sum += value;
  ++mean.count;
}

std::map<std::string, double> DictSummary::means() const {
  std::map<std::string, double> means;
  for (const auto& [key, mean] : summaries_) {
    if (mean.count > 0) means[key] = mean.sum / static_cast<double>(mean.count);
  }
  return means;
}

StateDict DictSummary::state_dict() const {
  nlohmann::json summary = nlohmann::json::object();
  for (const auto& [key, mean] : summaries_) summary[key] = {mean.sum, mean.count};
  StateDict state;
  state.set("summary", summary.dump());
  return state;
}

void DictSummary::load_state_dict(const StateDict& state, const char* who) {
  std::map<std::string, RunningMean> summaries;
  try {
    const nlohmann::json summary = nlohmann::json::parse(state.text("summary"));
    if (!summary.is_object()) throw Error("not a JSON object");
    for (const auto& [key, pair] : summary.items()) {
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number() ||
          !pair[1].is_number_integer() || pair[1].get<int64_t>() < 0) {
        throw Error(fmt::format("entry '{}' is not [sum, count]", key));
      }
      summaries[key] = RunningMean{pair[0].get<double>(), pair[1].get<int64_t>()};
    }
  } catch (const nlohmann::json::exception& error) {
    throw StateError(who, "summary", fmt::format("malformed JSON: {}", error.what()));
  } catch (const StateError&) {
    throw;
  } catch (const Error& error) {
    throw StateError(who, "summary", error.what());
  }
  summaries_ = std::move(summaries);
}

ObservationScope::ObservationScope(Observation& observation) : previous_(active_observation) {
  active_observation = &observation;
}

ObservationScope::~ObservationScope() { active_observation = previous_; }

}  // namespace tth
