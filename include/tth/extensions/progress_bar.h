// ProgressBar: shows how far training is, how fast it goes and when it will end (Chainer's
// ProgressBar).
//
//   hook.extend(std::make_shared<tth::ProgressBar>());
//   // or: plain lines every 10 iterations
//   hook.extend(std::make_shared<tth::ProgressBar>(
//       tth::ProgressBarOptions().update_interval(10).mode(tth::ProgressMode::kPlain)));
//
// It is called every iteration (default trigger {1, iteration}, priority kReader, name
// "ProgressBar"; extension.h has the protocol) and shows the progress when the iteration
// count is a multiple of `update_interval`. The length of training is the stop trigger's
// (TorchTrainerHook::training_length(), e.g. {10, tth::epoch}) unless `training_length` is
// given.
//
// Terminal mode draws Chainer's display and moves the cursor back to its first line, so the
// next update (or a PrintReport row) overwrites it:
//
//        total [##########........................................] 20.00%
//   this epoch [#########################.........................] 50.00%
//          200 iter, 2 epoch / 10 epochs
//       123.45 iters/sec. Estimated time to finish: 0:00:06.480000.
//
// finalize erases it. Plain mode (a log file, a pipe, a notebook) prints one line per
// update without escape codes:
//
//   iteration 200/1000 (20.0%), epoch 2.00/10, 123.5 iters/sec, ETA 0:00:06
//
// When the length is unknown, both leave out the total bar, the totals and the estimated
// time, and still show the counts and the speed. The speed is measured over the last 100
// updates, starting from the iteration at which this process started (initialize), so the
// first update after a resume measures only the iterations run since. An estimated time that
// cannot be computed (no progress measured yet) is shown as "unknown".
//
// State: none; the iteration counts it shows come from the hook, which restores them.
//
// In a data-parallel job (HookOptions::process_group) it acts on rank 0 only.
//
// Thread safety: training thread only.
#pragma once

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "tth/extension.h"
#include "tth/trigger.h"

namespace tth {

/// How ProgressBar draws.
enum class ProgressMode {
  /// kTerminal when the output is an interactive terminal (is_interactive_terminal), else
  /// kPlain.
  kAuto,
  /// Chainer's display, redrawn in place with escape codes.
  kTerminal,
  /// One plain line per update.
  kPlain,
};

/// Whether `out` is std::cout, standard output is a terminal (isatty), and the environment
/// variable TERM is not "dumb": then escape codes that move the cursor work.
bool is_interactive_terminal(const std::ostream* out);

/// Options of ProgressBar.
struct ProgressBarOptions {
  // A named type: TORCH_ARG spells `const T&`, which a bare `std::ostream*` would misread.
  using Stream = std::ostream*;
  /// Shows the progress every this many iterations; must be > 0. Default 100.
  TORCH_ARG(int64_t, update_interval) = 100;
  /// Width of a bar in characters (terminal mode); must be > 0. Default 50.
  TORCH_ARG(int64_t, bar_length) = 50;
  /// Where to draw; must outlive the extension. Default &std::cout.
  TORCH_ARG(Stream, out) = &std::cout;
  /// Terminal or plain output. Default kAuto.
  TORCH_ARG(ProgressMode, mode) = ProgressMode::kAuto;
  /// The length of training. Default (nullopt): the hook's training_length().
  TORCH_ARG(std::optional<Duration>, training_length);
};

/// Shows training progress; see the header comment.
class ProgressBar : public Extension {
 public:
  /// Throws tth::Error naming the option for update_interval <= 0, bar_length <= 0, a null
  /// out, or a training_length whose period is not finite and > 0.
  explicit ProgressBar(ProgressBarOptions options = {});

  void operator()(TorchTrainerHook& hook) override;
  /// Starts the speed measurement at the current (possibly resumed) iteration.
  void initialize(TorchTrainerHook& hook) override;
  /// Erases the terminal display.
  void finalize(TorchTrainerHook& hook) override;
  std::string default_name() const override { return "ProgressBar"; }

 private:
  struct Timing {
    int64_t iteration;
    double epoch_detail;
    std::chrono::steady_clock::time_point time;
  };
  // Iterations and epochs per second since the oldest recorded update.
  struct Speed {
    double iterations;
    double epochs;
  };

  Speed update_speed(const TorchTrainerHook& hook);
  std::vector<std::string> terminal_lines(const TorchTrainerHook& hook, const Speed& speed) const;
  std::string plain_line(const TorchTrainerHook& hook, const Speed& speed) const;
  bool terminal() const;

  ProgressBarOptions options_;
  std::deque<Timing> recent_;
  bool drawn_ = false;  // a terminal display is on screen
};

}  // namespace tth
