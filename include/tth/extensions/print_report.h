// PrintReport: prints chosen entries of a LogReport's rows as an aligned table (Chainer's
// PrintReport).
//
//   hook.extend(std::make_shared<tth::LogReport>());
//   hook.extend(std::make_shared<tth::PrintReport>(
//       std::vector<std::string>{"epoch", "iteration", "main/loss", "elapsed_time"}));
//
// prints
//
//   epoch       iteration   main/loss   elapsed_time
//   1           100         0.693147    1.25
//
// Each column is max(length of the entry, 10) characters wide and followed by two spaces.
// The header (the entries, left-aligned, joined by two spaces) is printed at the first call
// in each process; then every call prints the LogReport's rows that were not printed yet,
// each value as Python's `'{:<Wg}'` formats it (6 significant digits), an entry missing from
// a row as blanks of its column's width. When the output is an interactive terminal
// (tth::is_interactive_terminal), each row is preceded by the escape code that erases the
// screen below the cursor, so a row replaces a ProgressBar drawn there, as in Chainer.
//
// The LogReport is found by its registered name (hook.extension(name)) at initialize and at
// each call; register PrintReport after it with the same priority (both default to
// kReader), so a row is printed in the iteration it is appended. Defaults: trigger
// {1, iteration}, priority kReader, name "PrintReport" (extension.h has the protocol).
//
// State: how many rows were printed, so a resumed run does not print old rows again (it
// prints the header again, once).
//
// In a data-parallel job (HookOptions::process_group) it acts on rank 0 only (every rank still
// checks at initialize that the LogReport exists); its state keeps the same key on every rank.
//
// Thread safety: training thread only; the stream is written from the training thread.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "tth/extension.h"

namespace tth {

class LogReport;

/// Options of PrintReport.
struct PrintReportOptions {
  // A named type: TORCH_ARG spells `const T&`, which a bare `std::ostream*` would misread.
  using Stream = std::ostream*;
  /// The registered name of the LogReport whose rows are printed. Default "LogReport".
  TORCH_ARG(std::string, log_report) = "LogReport";
  /// Where to print; must outlive the extension. Default &std::cout.
  TORCH_ARG(Stream, out) = &std::cout;
};

/// Prints a LogReport's rows; see the header comment.
class PrintReport : public Extension {
 public:
  /// Throws tth::Error when options.out() is null.
  explicit PrintReport(std::vector<std::string> entries, PrintReportOptions options = {});

  void operator()(TorchTrainerHook& hook) override;
  /// Checks that the LogReport exists: tth::Error naming it otherwise.
  void initialize(TorchTrainerHook& hook) override;
  std::string default_name() const override { return "PrintReport"; }

  /// {"printed_rows": int64}.
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  const LogReport& find_log_report(const TorchTrainerHook& hook) const;
  void print_row(const std::map<std::string, double>& row);

  std::vector<std::string> entries_;
  std::vector<std::size_t> widths_;
  std::string log_report_;
  std::ostream* out_;
  bool header_printed_ = false;
  bool erase_ = false;  // the output is a terminal: erase below the cursor before each row
  int64_t printed_rows_ = 0;
};

}  // namespace tth
