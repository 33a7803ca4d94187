// The tolerance of every epoch-position comparison, so the manager and the triggers agree on
// when an epoch boundary is crossed (0.3 / 0.1 must count as 3). Private.
#pragma once

namespace tth {

inline constexpr double kEpochTolerance = 1e-9;

}  // namespace tth
