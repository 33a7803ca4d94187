// AverageAcrossRanks: reported values averaged over the ranks of a data-parallel job, so that
// every rank logs and decides on the job's value rather than on its own shard's.
//
//   hook.extend(tth::average_across_ranks({"main/loss", "validation/main/loss",
//                                          "validation/main/accuracy"}));
//
// Each time it is called it replaces each named value of the current observation by its mean
// over the ranks that reported that key in this iteration. A key reported on some ranks only
// gets that mean on every rank (it appears on the ranks that lacked it); a key reported on none
// stays absent. Without a process group (HookOptions::process_group), or with one rank, it does
// nothing. Every call runs one collective on every rank (the process group's all_reduce_sum of
// one float64 tensor on its device() holding each key's sum and number of reporters), so a key
// missing on some rank is fine, and every rank ends the call with the same values.
//
// The mean is unweighted: each rank's value counts once, whatever it was computed over. A value
// that is itself a mean over a rank's shard (a loss, an Evaluator's accuracy) thus becomes a mean
// of per-rank means, which is biased when the ranks' shards differ in size; a sharded
// BatchIterator (num_replicas, rank) gives every rank shards of the same size. Without it, an
// EarlyStoppingTrigger or a MaxValueTrigger reads each rank's own value and the ranks stop or
// keep snapshots at different iterations (pytorch-pfn-extras#676).
//
// Ordering. Defaults: trigger {1, iteration}, priority kEditor (200), name
// "AverageAcrossRanks". Extensions run in priority order, each right after its own trigger
// fired (extension.h), so:
//  - it averages what the step reported and what kWriter extensions (300: Evaluator's
//    "validation/..." values) reported before it;
//  - extensions of lower priority and their triggers see the averaged values: LogReport,
//    PrintReport, PlotReport, ProgressBar and the parameter shifts (kReader, 100), snapshots
//    and their keep_best / MaxValueTrigger (kSnapshot, whose triggers are evaluated after every
//    higher priority ran), and the stop trigger (EarlyStoppingTrigger), which is evaluated
//    after every extension above kSnapshot ran;
//  - an extension of the same priority (MicroAverage, kEditor) runs before it if registered
//    before it, after it otherwise; register it first to have the average read.
// A value that averaging changes is stored as a number (a reported tensor is read once).
//
// Every rank must register it with the same keys and the same trigger (and call_before_training
// alike): otherwise the ranks' collectives do not match, and the job deadlocks or fails with
// tth::DistributedError after the group's timeout. A value that is not a numeric scalar (a
// complex number, say) on any rank throws tth::Error naming the key on every rank, after the
// collective, so that no rank is left waiting.
//
// State: none (it keeps nothing between calls).
//
// Thread safety: training thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tth/extension.h"
#include "tth/trigger.h"

namespace tth {

/// Averages reported values over the ranks; see the header comment.
class AverageAcrossRanks : public Extension {
 public:
  /// REQUIRES: `keys` non-empty, without empty or repeated keys; tth::Error naming `keys`
  /// otherwise.
  explicit AverageAcrossRanks(std::vector<std::string> keys);

  /// Replaces each key's value by its mean over the ranks that reported it (header comment).
  /// Throws tth::DistributedError when the collective fails, tth::Error naming the key for a
  /// value that is not a numeric scalar on some rank.
  void operator()(TorchTrainerHook& hook) override;

  std::string default_name() const override { return "AverageAcrossRanks"; }
  TriggerRef default_trigger() const override { return {1, iteration}; }
  int default_priority() const override { return priority::kEditor; }

  /// The averaged keys, in the order given.
  const std::vector<std::string>& keys() const noexcept { return keys_; }

 private:
  std::vector<std::string> keys_;
};

/// Makes an AverageAcrossRanks of `keys`.
std::shared_ptr<AverageAcrossRanks> average_across_ranks(std::vector<std::string> keys);

}  // namespace tth
