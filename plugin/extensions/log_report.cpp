#include "tth/extensions/log_report.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "posix_file.h"
#include "triggers/check_trigger.h"
#include "tth/atomic_file.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

constexpr char kWho[] = "LogReport::load_state_dict";
constexpr char kTriggerKey[] = "trigger";
constexpr char kSummaryKey[] = "summary";
constexpr char kLogKey[] = "log";
// The entries every row ends with, in this order.
constexpr const char* kCounterKeys[] = {"epoch", "iteration", "elapsed_time"};

bool is_counter(const std::string& key) {
  for (const char* counter : kCounterKeys) {
    if (key == counter) return true;
  }
  return false;
}

// JSON has no literal for non-finite numbers. The file spells them as Python's json module
// does (so Python reads the file back); the state text, read by nlohmann, as strings.
constexpr char kNaN[] = "NaN";
constexpr char kInfinity[] = "Infinity";
constexpr char kMinusInfinity[] = "-Infinity";

const char* non_finite_name(double value) {
  if (std::isnan(value)) return kNaN;
  return value > 0 ? kInfinity : kMinusInfinity;
}

// A number as Python's json writes it: integers for epoch and iteration, repr() for floats.
// fmt's shortest round-trip digits and exponent threshold are repr()'s; repr() adds ".0" to
// integral values.
std::string python_number(const std::string& key, double value) {
  if (!std::isfinite(value)) return non_finite_name(value);
  if (key == "epoch" || key == "iteration") return fmt::format("{}", static_cast<int64_t>(value));
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

// A key as Python's json writes it by default (ensure_ascii).
std::string python_string(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', /*ensure_ascii=*/true,
                                   nlohmann::json::error_handler_t::replace);
}

// The rows' keys in file order: the means by key, then the counters.
std::vector<std::string> ordered_keys(const LogReport::Row& row) {
  std::vector<std::string> keys;
  for (const auto& entry : row) {
    if (!is_counter(entry.first)) keys.push_back(entry.first);
  }
  for (const char* counter : kCounterKeys) {
    if (row.count(counter) != 0) keys.emplace_back(counter);
  }
  return keys;
}

// The layout of Python's json.dump(log, f, indent=4).
std::string python_json(const std::vector<LogReport::Row>& log) {
  if (log.empty()) return "[]";
  std::string text = "[";
  for (std::size_t r = 0; r < log.size(); ++r) {
    text += r == 0 ? "\n    {" : ",\n    {";
    const std::vector<std::string> keys = ordered_keys(log[r]);
    for (std::size_t k = 0; k < keys.size(); ++k) {
      text += k == 0 ? "\n        " : ",\n        ";
      text += python_string(keys[k]) + ": " + python_number(keys[k], log[r].at(keys[k]));
    }
    text += keys.empty() ? "}" : "\n    }";
  }
  return text + "\n]";
}

std::string state_json(const std::vector<LogReport::Row>& log) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const LogReport::Row& row : log) {
    nlohmann::ordered_json object = nlohmann::ordered_json::object();
    for (const std::string& key : ordered_keys(row)) {
      const double value = row.at(key);
      if (std::isfinite(value)) {
        object[key] = value;
      } else {
        object[key] = non_finite_name(value);
      }
    }
    rows.push_back(std::move(object));
  }
  return rows.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

double state_number(const nlohmann::json& value, std::size_t row, const std::string& key) {
  if (value.is_number()) return value.get<double>();
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (text == kNaN) return std::nan("");
    if (text == kInfinity) return HUGE_VAL;
    if (text == kMinusInfinity) return -HUGE_VAL;
  }
  throw StateError(kWho, kLogKey,
                   fmt::format("row {} entry '{}' is not a number: {}", row, key, value.dump()));
}

std::vector<LogReport::Row> parse_log(const std::string& text) {
  nlohmann::json rows;
  try {
    rows = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw StateError(kWho, kLogKey, fmt::format("malformed JSON: {}", error.what()));
  }
  if (!rows.is_array()) throw StateError(kWho, kLogKey, "not a JSON list of rows");
  std::vector<LogReport::Row> log;
  log.reserve(rows.size());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (!rows[r].is_object()) {
      throw StateError(kWho, kLogKey, fmt::format("row {} is not a JSON object", r));
    }
    LogReport::Row row;
    for (const auto& [key, value] : rows[r].items()) row[key] = state_number(value, r, key);
    log.push_back(std::move(row));
  }
  return log;
}

void write_text(const std::string& path, const std::string& text) {
  File file(path, O_WRONLY | O_TRUNC);
  file.write_all(text.data(), text.size());
  file.close();
}

}  // namespace

LogReport::LogReport(LogReportOptions options)
    : keys_(std::move(options.keys())),
      trigger_(trigger_or(options.trigger(), 1, epoch)),
      filename_(std::move(options.filename())) {}

void LogReport::operator()(TorchTrainerHook& hook) {
  if (hook.rank() != 0) return;  // a data-parallel job logs on rank 0 only
  const Observation& observation = hook.observation();
  if (keys_) {
    for (const std::string& key : *keys_) {
      auto found = observation.find(key);
      if (found != observation.end()) summary_.add(key, found->second.value());
    }
  } else {
    summary_.add(observation);
  }
  if (!trigger_ || !(*trigger_)(hook)) return;

  Row row = summary_.means();
  row["epoch"] = static_cast<double>(hook.epoch());
  row["iteration"] = static_cast<double>(hook.iteration());
  row["elapsed_time"] = hook.elapsed_time();
  log_.push_back(std::move(row));
  summary_.reset();
  write_file(hook);
}

void LogReport::initialize(TorchTrainerHook& hook) {
  if (!loaded_ || hook.rank() != 0) return;
  write_file(hook);
  loaded_ = false;
}

void LogReport::write_file(const TorchTrainerHook& hook) const {
  if (filename_.empty()) return;
  const std::string path = (std::filesystem::path(hook.out()) / filename_).string();
  const std::string text = python_json(log_);
  atomic_write(path, [&](const std::string& temp) { write_text(temp, text); });
}

StateDict LogReport::state_dict() const {
  StateDict state;
  if (trigger_) state.merge(kTriggerKey, trigger_->state_dict());
  state.merge(kSummaryKey, summary_.state_dict());
  state.set(kLogKey, state_json(log_));
  return state;
}

void LogReport::load_state_dict(const StateDict& state) {
  // Everything that can be malformed is read before anything changes.
  std::vector<Row> log = parse_log(state.text(kLogKey));
  DictSummary summary;
  try {
    summary.load_state_dict(state.sub(kSummaryKey), kWho);
  } catch (const StateError& error) {
    throw StateError(kWho, std::string(kSummaryKey) + "/" + error.key(), error.problem());
  }
  if (trigger_) trigger_->load_state_dict(state.sub(kTriggerKey));
  summary_ = std::move(summary);
  log_ = std::move(log);
  loaded_ = true;
}

}  // namespace tth
