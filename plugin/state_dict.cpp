#include "tth/state_dict.h"

#include <ATen/ops/scalar_tensor.h>
#include <fmt/format.h>

#include <utility>

#include "tth/error.h"

namespace tth {

void StateDict::set(const std::string& key, StateValue value) {
  auto found = index_.find(key);
  if (found != index_.end()) {
    entries_[found->second].second = std::move(value);
    return;
  }
  index_.emplace(key, entries_.size());
  entries_.emplace_back(key, std::move(value));
}

void StateDict::set_int(const std::string& key, int64_t value) {
  set(key, at::scalar_tensor(value, at::kLong));
}

void StateDict::set_double(const std::string& key, double value) {
  set(key, at::scalar_tensor(value, at::kDouble));
}

void StateDict::set_bool(const std::string& key, bool value) {
  set(key, at::scalar_tensor(value, at::kBool));
}

bool StateDict::contains(const std::string& key) const { return index_.count(key) != 0; }

const StateValue& StateDict::at(const std::string& key) const {
  auto found = index_.find(key);
  if (found == index_.end()) throw StateError("StateDict", key, "is absent");
  return entries_[found->second].second;
}

const at::Tensor& StateDict::tensor(const std::string& key) const {
  const auto* value = std::get_if<at::Tensor>(&at(key));
  if (value == nullptr) throw StateError("StateDict", key, "holds a text, not a tensor");
  return *value;
}

const std::string& StateDict::text(const std::string& key) const {
  const auto* value = std::get_if<std::string>(&at(key));
  if (value == nullptr) throw StateError("StateDict", key, "holds a tensor, not a text");
  return *value;
}

namespace {
const at::Tensor& scalar(const StateDict& state, const std::string& key) {
  const at::Tensor& value = state.tensor(key);
  if (!value.defined() || value.numel() != 1) {
    throw StateError("StateDict", key,
                     fmt::format("must hold a scalar, got {}", describe(StateValue(value))));
  }
  return value;
}
}  // namespace

int64_t StateDict::get_int(const std::string& key) const {
  return scalar(*this, key).item<int64_t>();
}

double StateDict::get_double(const std::string& key) const {
  return scalar(*this, key).item<double>();
}

bool StateDict::get_bool(const std::string& key) const { return scalar(*this, key).item<bool>(); }

bool StateDict::erase(const std::string& key) {
  auto found = index_.find(key);
  if (found == index_.end()) return false;
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(found->second));
  index_.clear();
  for (std::size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
  return true;
}

StateValue StateDict::take(const std::string& key) {
  auto found = index_.find(key);
  if (found == index_.end()) throw StateError("StateDict", key, "is absent");
  StateValue& slot = entries_[found->second].second;
  StateValue value = std::move(slot);
  slot.emplace<at::Tensor>();  // an undefined tensor
  return value;
}

std::vector<StateDict::Entry> StateDict::release() {
  index_.clear();
  return std::exchange(entries_, {});
}

StateDict StateDict::sub(const std::string& prefix) const {
  const std::string head = prefix + "/";
  StateDict result;
  for (const auto& [key, value] : entries_) {
    if (key.compare(0, head.size(), head) == 0) result.set(key.substr(head.size()), value);
  }
  return result;
}

void StateDict::merge(const std::string& prefix, const StateDict& other) {
  for (const auto& [key, value] : other) set(prefix + "/" + key, value);
}

std::string describe(const StateValue& value) {
  const auto* tensor = std::get_if<at::Tensor>(&value);
  if (tensor == nullptr) return "text";
  if (!tensor->defined()) return "undefined tensor";
  return fmt::format("{}[{}]", c10::toString(tensor->scalar_type()),
                     fmt::join(tensor->sizes(), ", "));
}

IncompatibleKeys check_compatible(const StateDict& expected, const StateDict& given, bool strict,
                                  const std::string& what) {
  IncompatibleKeys report;
  for (const auto& [key, value] : expected) {
    if (!given.contains(key)) {
      if (!strict) {
        report.missing_keys.push_back(key);
        continue;
      }
      throw StateError(what, key, "is missing from the loaded state");
    }
    const StateValue& other = given.at(key);
    if (describe(value) != describe(other)) {
      throw StateError(
          what, key, fmt::format("holds {} but {} is expected", describe(other), describe(value)));
    }
  }
  for (const auto& entry : given) {
    if (expected.contains(entry.first)) continue;
    if (!strict) {
      report.unexpected_keys.push_back(entry.first);
      continue;
    }
    throw StateError(what, entry.first,
                     "is not expected: nothing here saves it (load non-strictly to ignore it)");
  }
  return report;
}

}  // namespace tth
