// Stateful: an object whose state survives a resume.
//
// Triggers, extensions and user objects registered with `TorchTrainerHook::add_state` share
// this interface: `state_dict()` returns the state as a StateDict (see state_dict.h), and
// `load_state_dict()` restores it. Loaders receive a state that the manager has already
// checked against `state_dict()` (same keys, kinds, dtypes, shapes), so they only read.
#pragma once

#include "tth/state_dict.h"

namespace tth {

/// An object with resumable state. Both defaults are "no state".
class Stateful {
 public:
  virtual ~Stateful() = default;
  /// The current state. Default: empty.
  virtual StateDict state_dict() const { return {}; }
  /// Restores a state produced by state_dict().
  virtual void load_state_dict(const StateDict& state) { (void)state; }
};

}  // namespace tth
