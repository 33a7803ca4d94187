// LogReport: the means of reported values over intervals, kept as a list and written to a
// JSON file (Chainer's LogReport).
//
//   hook.extend(std::make_shared<tth::LogReport>());  // a row every epoch, into <out>/log
//   // or: only main/loss, a row every 100 iterations
//   hook.extend(std::make_shared<tth::LogReport>(
//       tth::LogReportOptions()
//           .keys(std::vector<std::string>{"main/loss"})
//           .trigger({100, tth::iteration})));
//
// The extension runs every iteration (its default trigger {1, iteration}, priority kReader,
// name "LogReport"; see extension.h for the protocol) and adds that iteration's observation,
// or only the values of `keys`, to a running mean per key (tth::DictSummary). When its own
// `trigger` fires it appends a row to log(): the mean of every key reported since the last
// row (keys not reported in the interval are left out), then "epoch" and "iteration" (the
// completed counts) and "elapsed_time" (TorchTrainerHook::elapsed_time(), which continues
// across resumes), and starts a new interval. So registering it with a coarser trigger than
// every iteration averages only the iterations it is called at, as in Chainer.
//
// The file: after each row, `<out>/<filename>` is rewritten with the whole list, through
// tth::atomic_write (a reader never sees a torn file), in the layout of Python's
// `json.dump(log, f, indent=4)`: one object per row, the means first (by key), then epoch and
// iteration (integers) and elapsed_time. Non-finite means are written as Python writes them
// (NaN, Infinity, -Infinity), which Python's json.load reads back.
//
// State (state_dict): its trigger's state under "trigger/", the running means of the current
// interval under "summary/" (DictSummary), and the rows so far as a JSON text "log" (numbers;
// non-finite values as the strings "NaN", "Infinity", "-Infinity"). A resumed run therefore
// continues the interval's means and appends no duplicated and no lost rows (chainer#2550,
// chainer#3978). Because a killed run may have written rows after its last snapshot, a
// LogReport whose state was loaded rewrites the file from the loaded rows at initialize, so
// the file always matches the state; the replayed iterations write those rows again.
//
// In a data-parallel job (HookOptions::process_group) it acts on rank 0 only: elsewhere it
// averages nothing, appends no row and writes no file, and its state keeps the same keys (so
// every rank loads rank 0's snapshot strictly; a rank other than 0 keeps its rows unseen).
//
// Thread safety: training thread only.
#pragma once

#include <torch/arg.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tth/extension.h"
#include "tth/reporter.h"
#include "tth/trigger.h"

namespace tth {

/// Options of LogReport.
struct LogReportOptions {
  /// The keys to average. Default (nullopt): every reported key.
  TORCH_ARG(std::optional<std::vector<std::string>>, keys);
  /// When a row is appended (not when the extension is called). TriggerRef::never() appends
  /// none; an unset TriggerRef means the default. Default {1, epoch}.
  TORCH_ARG(TriggerRef, trigger) = TriggerRef(1, epoch);
  /// The file, relative to the hook's out directory (an absolute path is taken as is).
  /// "" writes no file. Default "log".
  TORCH_ARG(std::string, filename) = "log";
};

/// Logs interval means of reported values; see the header comment.
class LogReport : public Extension {
 public:
  /// One row: key -> value, with "epoch", "iteration" and "elapsed_time".
  using Row = std::map<std::string, double>;

  explicit LogReport(LogReportOptions options = {});

  /// The rows appended so far (after a resume: those of the loaded state, then new ones).
  const std::vector<Row>& log() const noexcept { return log_; }

  void operator()(TorchTrainerHook& hook) override;
  /// Rewrites the file from log() if a state was loaded (see the header comment).
  void initialize(TorchTrainerHook& hook) override;
  std::string default_name() const override { return "LogReport"; }

  /// {"trigger/...": its trigger's state, "summary/summary": text, "log": text}.
  StateDict state_dict() const override;
  /// Throws tth::StateError naming the key for a "log" text that is not a JSON list of
  /// objects of numbers, or a malformed "summary/summary"; nothing changes then.
  void load_state_dict(const StateDict& state) override;

 private:
  void write_file(const TorchTrainerHook& hook) const;

  std::optional<std::vector<std::string>> keys_;
  std::shared_ptr<Trigger> trigger_;  // null: never appends
  std::string filename_;
  DictSummary summary_;
  std::vector<Row> log_;
  bool loaded_ = false;  // a state was loaded and the file not yet rewritten from it
};

}  // namespace tth
