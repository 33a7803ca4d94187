// The default random generators' states (CPU, and each CUDA device when present), so that a
// resumed run draws the same numbers (dropout, shuffling) as an uninterrupted one. Private.
//   cpu          the CPU generator's state (uint8)
//   cuda/<i>     device i's generator state (uint8), present only on machines with CUDA
#pragma once

#include "tth/state_dict.h"

namespace tth {

StateDict rng_state_dict();
/// Restores the generators named in `state` (checked against rng_state_dict()).
void load_rng_state(const StateDict& state);

}  // namespace tth
