// Reporter: values that code reports during an iteration.
//
// `tth::report("main/loss", loss)` anywhere inside an iteration (the update, the model's
// forward, an extension) adds the value to that iteration's observation, which the manager
// clears when the next iteration starts. Triggers and extensions read it through
// `TorchTrainerHook::observation()`. Tensors are detached when reported and converted to a
// double only when first read, once: reporting a CUDA loss does not synchronize the device
// unless something reads it. Outside an iteration (no active observation) `report` does
// nothing, as in Chainer, so model code can report unconditionally.
//
// Thread safety: the active observation is per thread; report from the training thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <map>
#include <string>
#include <utility>

#include "tth/state_dict.h"

namespace tth {

/// One reported value: a number, or a scalar tensor converted on first read.
class ObservedValue {
 public:
  ObservedValue(double value) : value_(value), converted_(true) {}  // NOLINT
  ObservedValue(const at::Tensor& tensor);                          // NOLINT

  /// The value as a double. Throws tth::Error if the tensor has more than one element.
  double value() const;

 private:
  at::Tensor tensor_;
  mutable double value_ = 0;
  mutable bool converted_;
};

/// The values reported during one iteration, by key. A key reported twice keeps the last.
using Observation = std::map<std::string, ObservedValue>;

/// Adds `value` under `key` to the active observation; no-op when none is active.
void report(const std::string& key, ObservedValue value);
/// Map form: `tth::report({{"main/loss", loss}, {"main/accuracy", acc}})`.
void report(std::initializer_list<std::pair<const std::string, ObservedValue>> values);

/// Mean of one reported key over an interval (Chainer's reporter.Summary for one key).
/// Used by triggers and extensions that average what was reported. Its state ("sum",
/// "count") goes into the owner's state_dict, so a resumed interval continues its mean.
struct RunningMean {
  double sum = 0;
  int64_t count = 0;

  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

  /// Adds `key` from `observation` when it was reported there.
  void add(const Observation& observation, const std::string& key);
  /// The mean since the last take(), then starts a new interval. Throws tth::Error naming
  /// `key` and `who` when nothing was reported in the interval.
  double take(const std::string& key, const char* who);
};

/// Means of every reported key over an interval (Chainer's reporter.DictSummary): what
/// LogReport, PlotReport and Evaluator average. Its state is one JSON text (keys vary), with
/// sums and counts written exactly, so a resumed interval continues the same means.
class DictSummary {
 public:
  /// Adds every value of `observation`.
  void add(const Observation& observation);
  /// Adds `value` under `key`.
  void add(const std::string& key, double value);
  /// The mean of each key added since the last reset, by key.
  std::map<std::string, double> means() const;
  /// Forgets every value: a new interval starts.
  void reset() { summaries_.clear(); }
  bool empty() const noexcept { return summaries_.empty(); }

  /// {"summary": text}, the text a JSON object {key: [sum, count]}.
  StateDict state_dict() const;
  /// Throws tth::StateError naming `who` and the key "summary" for a malformed text.
  void load_state_dict(const StateDict& state, const char* who = "DictSummary");

 private:
  std::map<std::string, RunningMean> summaries_;
};

/// Makes `observation` the target of report() in this thread while alive (nestable: the
/// previous target is restored). The manager opens one per iteration.
class ObservationScope {
 public:
  explicit ObservationScope(Observation& observation);
  ~ObservationScope();
  ObservationScope(const ObservationScope&) = delete;
  ObservationScope& operator=(const ObservationScope&) = delete;

 private:
  Observation* previous_;
};

}  // namespace tth
