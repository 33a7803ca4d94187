// Mode: which direction of a reported value is an improvement. Shared by EarlyStoppingTrigger
// and the snapshots' keep_best retention, so that both read "auto" the same way.
#pragma once

#include <string>

namespace tth {

/// Direction of improvement; kAuto means kMax when the key contains "accuracy", else kMin.
enum class Mode { kAuto, kMin, kMax };

/// Whether larger values of `key` are better under `mode` (kAuto decided by the key's name).
inline bool maximizes(Mode mode, const std::string& key) {
  if (mode == Mode::kAuto) return key.find("accuracy") != std::string::npos;
  return mode == Mode::kMax;
}

}  // namespace tth
