// MicroAverage: a ratio of sums over an interval, such as accuracy over every example.
//
// Chainer's MicroAverage. The Evaluator and LogReport average per batch (the macro average),
// which weighs a smaller last batch as much as a full one. For a per-example ratio, report a
// numerator and a denominator each iteration ("main/correct" and "main/total") and let this
// extension report
//     result_key = sum(numerator) / sum(denominator)
// over the interval of its own trigger (default {1, epoch}).
//
// It is called every iteration (its default trigger as an extension is {1, iteration}, distinct
// from the averaging trigger). An iteration that reported both keys adds them to the sums and
// then consults the averaging trigger; when that fires, the ratio is reported into the current
// observation and the sums restart. An iteration that lacks either key is skipped entirely,
// the averaging trigger included, as in Chainer (an IntervalTrigger consulted later still
// fires for a boundary it crossed). Its priority is kEditor, so readers (LogReport) see the
// result in the same iteration.
//
// A fire with a zero sum of denominators throws tth::Error naming both keys.
//
// State: both sums and the averaging trigger's state (pytorch-pfn-extras#760 lost the latter,
// so a resumed run reported at the wrong iteration): a run resumed mid-interval reports what
// an uninterrupted one does.
// Thread safety: training thread only.
#pragma once

#include <memory>
#include <string>

#include "tth/extension.h"
#include "tth/trigger.h"

namespace tth {

/// Reports sum(numerator) / sum(denominator) over its trigger's interval; see the header.
class MicroAverage : public Extension {
 public:
  /// REQUIRES: non-empty keys; a trigger that is not never(). An unset trigger means
  /// {1, epoch}.
  MicroAverage(std::string numerator_key, std::string denominator_key, std::string result_key,
               TriggerRef trigger = {1, epoch});

  void operator()(TorchTrainerHook& hook) override;

  int default_priority() const override { return priority::kEditor; }

  /// {"numerator", "denominator"} as doubles and the trigger's state under "trigger/".
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  std::string numerator_key_;
  std::string denominator_key_;
  std::string result_key_;
  std::shared_ptr<Trigger> trigger_;
  double numerator_ = 0;
  double denominator_ = 0;
};

}  // namespace tth
