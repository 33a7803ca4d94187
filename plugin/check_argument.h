// The one shape of every argument check at the API edge:
//   "<Who>: <argument> <requirement>, got <value>"
// e.g. "IntervalTrigger: period must be finite and > 0, got -1". Private.
#pragma once

#include <fmt/format.h>

#include <string_view>

#include "tth/error.h"

namespace tth {

/// The error for an argument that fails `requirement` ("must be > 0").
template <typename Value>
Error argument_error(std::string_view who, std::string_view argument, std::string_view requirement,
                     const Value& value) {
  return Error(fmt::format("{}: {} {}, got {}", who, argument, requirement, value));
}

/// Throws argument_error(...) unless `ok`.
template <typename Value>
void check_argument(bool ok, std::string_view who, std::string_view argument,
                    std::string_view requirement, const Value& value) {
  if (!ok) throw argument_error(who, argument, requirement, value);
}

/// For checks where the value says nothing ("must not be null", "must be callable"):
/// "<Who>: <argument> <requirement>".
inline void check_argument(bool ok, std::string_view who, std::string_view argument,
                           std::string_view requirement) {
  if (!ok) throw Error(fmt::format("{}: {} {}", who, argument, requirement));
}

}  // namespace tth
