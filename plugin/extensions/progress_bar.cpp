#include "tth/extensions/progress_bar.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "check_argument.h"
#include "epoch_tolerance.h"
#include "terminal.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

constexpr char kWho[] = "ProgressBar";
// Chainer measures the speed over its last 100 updates.
constexpr std::size_t kRecentUpdates = 100;
// Longer estimates than this (about 30 million years) are not shown as a time.
constexpr double kLongestEstimate = 1e15;

// A time as Python's str(datetime.timedelta(seconds=...)) writes it: "1 day, 2:03:04" and,
// with `microseconds`, a ".ffffff" part when it is not zero; "unknown" when there is none.
std::string format_duration(double seconds, bool microseconds) {
  if (!std::isfinite(seconds) || seconds > kLongestEstimate) return "unknown";
  seconds = std::max(seconds, 0.0);
  int64_t total = microseconds ? std::llround(seconds * 1e6) : std::llround(seconds) * 1000000;
  const int64_t micros = total % 1000000;
  total /= 1000000;
  const int64_t days = total / 86400;
  const int64_t hours = total % 86400 / 3600;
  const int64_t minutes = total % 3600 / 60;
  const int64_t secs = total % 60;
  std::string text;
  if (days != 0) text = fmt::format("{} day{}, ", days, days == 1 ? "" : "s");
  text += fmt::format("{}:{:02}:{:02}", hours, minutes, secs);
  if (micros != 0) text += fmt::format(".{:06}", micros);
  return text;
}

// A length as Python's '%s' writes Chainer's integer periods; fractions in shortest form.
std::string format_length(double value) {
  if (value == std::floor(value) && std::abs(value) < 1e15) {
    return fmt::format("{}", static_cast<int64_t>(value));
  }
  return fmt::format("{}", value);
}

// A total for the plain line: an integer, or two decimals like the epoch count.
std::string format_total(double value) {
  if (value == std::floor(value) && std::abs(value) < 1e15) {
    return fmt::format("{}", static_cast<int64_t>(value));
  }
  return fmt::format("{:.2f}", value);
}

std::string format_speed(double speed) {
  if (!std::isfinite(speed)) return "?";
  return speed >= 1 ? fmt::format("{:.1f}", speed) : fmt::format("{:.3g}", speed);
}

// Chainer's bar line: "<label> [###...] " and the rate as Python's '{:6.2%}'.
std::string bar_line(const char* label, double rate, int64_t length) {
  const auto marks = static_cast<int64_t>(rate * static_cast<double>(length));
  return fmt::format("{} [{}{}] {:>6}\n", label, std::string(marks, '#'),
                     std::string(length - marks, '.'), fmt::format("{:.2f}%", rate * 100));
}

}  // namespace

bool is_interactive_terminal(const std::ostream* out) {
  if (out != &std::cout || ::isatty(STDOUT_FILENO) == 0) return false;
  const char* term = std::getenv("TERM");
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

ProgressBar::ProgressBar(ProgressBarOptions options) : options_(std::move(options)) {
  check_argument(options_.update_interval() > 0, kWho, "update_interval", "must be > 0",
                 options_.update_interval());
  check_argument(options_.bar_length() > 0, kWho, "bar_length", "must be > 0",
                 options_.bar_length());
  check_argument(options_.out() != nullptr, kWho, "out", "must not be null");
  if (const auto& length = options_.training_length()) {
    check_argument(std::isfinite(length->period) && length->period > 0, kWho,
                   "training_length period", "must be finite and > 0", length->period);
  }
}

bool ProgressBar::terminal() const {
  switch (options_.mode()) {
    case ProgressMode::kTerminal:
      return true;
    case ProgressMode::kPlain:
      return false;
    case ProgressMode::kAuto:
      break;
  }
  return is_interactive_terminal(options_.out());
}

void ProgressBar::initialize(TorchTrainerHook& hook) {
  if (hook.rank() != 0) return;  // a data-parallel job shows progress on rank 0 only
  recent_.clear();
  recent_.push_back({hook.iteration(), hook.epoch_detail(), std::chrono::steady_clock::now()});
}

ProgressBar::Speed ProgressBar::update_speed(const TorchTrainerHook& hook) {
  const auto now = std::chrono::steady_clock::now();
  recent_.push_back({hook.iteration(), hook.epoch_detail(), now});
  while (recent_.size() > kRecentUpdates) recent_.pop_front();
  const Timing& oldest = recent_.front();
  const double span = std::chrono::duration<double>(now - oldest.time).count();
  if (span <= 0) return {std::nan(""), std::nan("")};
  return {static_cast<double>(hook.iteration() - oldest.iteration) / span,
          (hook.epoch_detail() - oldest.epoch_detail) / span};
}

void ProgressBar::operator()(TorchTrainerHook& hook) {
  if (hook.rank() != 0) return;
  if (hook.iteration() % options_.update_interval() != 0) return;
  const Speed speed = update_speed(hook);
  std::ostream& out = *options_.out();
  if (terminal()) {
    const std::vector<std::string> lines = terminal_lines(hook, speed);
    out << terminal::kEraseBelow;
    for (const std::string& line : lines) out << line;
    out << fmt::format(terminal::kCursorUp, lines.size());
    drawn_ = true;
  } else {
    out << plain_line(hook, speed) << '\n';
  }
  out.flush();
}

void ProgressBar::finalize(TorchTrainerHook& hook) {
  if (hook.rank() != 0 || !drawn_) return;
  *options_.out() << terminal::kEraseBelow;
  options_.out()->flush();
  drawn_ = false;
}

std::vector<std::string> ProgressBar::terminal_lines(const TorchTrainerHook& hook,
                                                     const Speed& speed) const {
  const auto length =
      options_.training_length() ? options_.training_length() : hook.training_length();
  const auto iteration = hook.iteration();
  const double epoch_detail = hook.epoch_detail();
  std::vector<std::string> lines;
  double estimate = 0;
  if (length) {
    const bool by_iteration = length->unit == Unit::kIteration;
    const double done = by_iteration ? static_cast<double>(iteration) : epoch_detail;
    lines.push_back(
        bar_line("     total", std::min(done / length->period, 1.0), options_.bar_length()));
    estimate = (length->period - done) / (by_iteration ? speed.iterations : speed.epochs);
  }
  lines.push_back(
      bar_line("this epoch", epoch_detail - std::floor(epoch_detail), options_.bar_length()));
  std::string status = fmt::format("{:>10} iter, {} epoch", iteration, hook.epoch());
  if (length) {
    status += fmt::format(" / {} {}s", format_length(length->period), to_string(length->unit));
  }
  lines.push_back(status + "\n");
  std::string rate = fmt::format("{:10.5g} iters/sec.", speed.iterations);
  if (length) {
    rate += fmt::format(" Estimated time to finish: {}.", format_duration(estimate, true));
  }
  lines.push_back(rate + "\n");
  return lines;
}

std::string ProgressBar::plain_line(const TorchTrainerHook& hook, const Speed& speed) const {
  const auto length =
      options_.training_length() ? options_.training_length() : hook.training_length();
  const auto iteration = hook.iteration();
  const double epoch_detail = hook.epoch_detail();
  std::string line = fmt::format("iteration {}", iteration);
  if (!length) {
    return line + fmt::format(", epoch {:.2f}, {} iters/sec", epoch_detail,
                              format_speed(speed.iterations));
  }
  const bool by_iteration = length->unit == Unit::kIteration;
  const double done = by_iteration ? static_cast<double>(iteration) : epoch_detail;
  const double rate = std::min(done / length->period, 1.0);
  // The other unit's total: training ends at the first iteration that reaches the length.
  const double total_iterations =
      by_iteration ? length->period
                   : std::ceil(length->period * hook.iters_per_epoch() - kEpochTolerance);
  const double total_epochs =
      by_iteration ? length->period / hook.iters_per_epoch() : length->period;
  const double estimate =
      (length->period - done) / (by_iteration ? speed.iterations : speed.epochs);
  return line + fmt::format("/{} ({:.1f}%), epoch {:.2f}/{}, {} iters/sec, ETA {}",
                            format_total(total_iterations), rate * 100, epoch_detail,
                            format_total(total_epochs), format_speed(speed.iterations),
                            format_duration(estimate, false));
}

}  // namespace tth
