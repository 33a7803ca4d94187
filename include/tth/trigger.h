// Trigger: decides, once per iteration, whether something happens now.
//
// The manager evaluates each extension's trigger exactly once per iteration, after the update
// and in priority order (see extension.h), then the stop trigger.
// A trigger may keep state between calls (the previous iteration, a running mean); that state
// is part of the training state (state_dict/load_state_dict) so that a resumed run continues
// the same firing sequence.
//
// Anywhere a trigger is taken, a `TriggerRef` accepts a trigger object, `{period, tth::epoch}`
// or `{period, tth::iteration}` (an IntervalTrigger), or `TriggerRef::never()`.
//
// Thread safety: a trigger is used from the training thread only.
#pragma once

#include <memory>
#include <optional>
#include <type_traits>

#include "tth/stateful.h"

namespace tth {

class TorchTrainerHook;

/// The unit of a period: iterations (updates) or epochs (passes over the data).
enum class Unit { kIteration, kEpoch };
/// Short spellings used in `{period, tth::epoch}`.
inline constexpr Unit iteration = Unit::kIteration;
inline constexpr Unit epoch = Unit::kEpoch;

/// "iteration" or "epoch".
const char* to_string(Unit unit);

/// A length of training: `period` iterations or epochs.
struct Duration {
  double period;
  Unit unit;
};

/// Base class of all triggers.
class Trigger : public Stateful {
 public:
  /// Whether to fire now. Called once per iteration with the manager after the update
  /// (`hook.iteration()` already counts it). Never called twice for the same iteration.
  virtual bool operator()(const TorchTrainerHook& hook) = 0;

  /// True when the trigger will never fire again; the extension's `initialize` is then
  /// skipped on (re)start, as in Chainer. Default: false.
  virtual bool finished() const { return false; }

  /// How long training lasts when this is the stop trigger (for progress displays), if known.
  virtual std::optional<Duration> training_length() const { return std::nullopt; }
};

/// A trigger argument: a trigger object, `{period, unit}`, `never()`, or (default) unset,
/// which means "the extension's default trigger".
class TriggerRef {
 public:
  /// Unset: the receiver uses its default.
  TriggerRef() = default;
  /// An existing trigger object (shared, so the caller may keep a handle to inspect it).
  template <typename T, typename = std::enable_if_t<std::is_base_of_v<Trigger, T>>>
  TriggerRef(std::shared_ptr<T> trigger)  // NOLINT(google-explicit-constructor)
      : trigger_(std::move(trigger)), set_(true) {}
  /// An IntervalTrigger firing every `period` units; validated as IntervalTrigger is. Any
  /// arithmetic type, so `{epochs, tth::epoch}` works with an int variable.
  template <typename Number, typename = std::enable_if_t<std::is_arithmetic_v<Number>>>
  TriggerRef(Number period, Unit unit) : TriggerRef(interval(static_cast<double>(period), unit)) {}
  /// A trigger that never fires (an extension then runs only through call_before_training).
  static TriggerRef never();

  /// Whether a trigger (or never()) was given.
  bool is_set() const noexcept { return set_; }
  /// The trigger; null for never() or unset.
  const std::shared_ptr<Trigger>& get() const noexcept { return trigger_; }

 private:
  static TriggerRef interval(double period, Unit unit);

  std::shared_ptr<Trigger> trigger_;
  bool set_ = false;
};

}  // namespace tth
