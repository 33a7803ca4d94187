#include "tth/extensions/print_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "check_argument.h"
#include "terminal.h"
#include "tth/error.h"
#include "tth/extensions/log_report.h"
#include "tth/extensions/progress_bar.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

constexpr char kWho[] = "PrintReport";
constexpr char kPrintedRows[] = "printed_rows";
// Chainer's columns: at least 10 characters, then two spaces.
constexpr std::size_t kMinimumWidth = 10;
constexpr char kSeparator[] = "  ";

// Characters (code points) of a UTF-8 text, as Python's len() counts them.
std::size_t length(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

std::string pad(const std::string& text, std::size_t width) {
  const std::size_t used = length(text);
  return used >= width ? text : text + std::string(width - used, ' ');
}

// Python's format(value, 'g'): 6 significant digits; a NaN of either sign is "nan".
std::string python_g(double value) {
  if (std::isnan(value)) return "nan";
  return fmt::format("{:g}", value);
}

}  // namespace

PrintReport::PrintReport(std::vector<std::string> entries, PrintReportOptions options)
    : entries_(std::move(entries)),
      log_report_(std::move(options.log_report())),
      out_(options.out()) {
  check_argument(out_ != nullptr, kWho, "out", "must not be null");
  for (const std::string& entry : entries_)
    widths_.push_back(std::max(kMinimumWidth, length(entry)));
}

const LogReport& PrintReport::find_log_report(const TorchTrainerHook& hook) const {
  std::shared_ptr<Extension> found;
  try {
    found = hook.extension(log_report_);
  } catch (const Error&) {
    throw Error(fmt::format(
        "{}: log_report '{}' names no registered extension; register a tth::LogReport under "
        "that name, or pass its name in PrintReportOptions().log_report(...)",
        kWho, log_report_));
  }
  const auto* log_report = dynamic_cast<const LogReport*>(found.get());
  if (log_report == nullptr) {
    throw Error(fmt::format("{}: log_report '{}' names an extension that is not a tth::LogReport",
                            kWho, log_report_));
  }
  return *log_report;
}

void PrintReport::initialize(TorchTrainerHook& hook) {
  // Checked on every rank, so that a misconfigured job fails alike everywhere instead of
  // leaving the other ranks waiting for rank 0 at their next collective.
  find_log_report(hook);
  if (hook.rank() != 0) return;
  erase_ = is_interactive_terminal(out_);
}

void PrintReport::operator()(TorchTrainerHook& hook) {
  if (hook.rank() != 0) return;  // a data-parallel job prints on rank 0 only
  const LogReport& log_report = find_log_report(hook);
  const auto& log = log_report.log();
  if (header_printed_ && printed_rows_ >= static_cast<int64_t>(log.size())) return;
  std::ostream& out = *out_;
  if (!header_printed_) {
    std::string header;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (i != 0) header += kSeparator;
      header += pad(entries_[i], widths_[i]);
    }
    out << header << '\n';
    header_printed_ = true;
  }
  for (; printed_rows_ < static_cast<int64_t>(log.size()); ++printed_rows_) {
    if (erase_) out << terminal::kEraseBelow;
    print_row(log[static_cast<std::size_t>(printed_rows_)]);
  }
  out.flush();
}

void PrintReport::print_row(const std::map<std::string, double>& row) {
  std::string line;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    auto found = row.find(entries_[i]);
    const std::string value = found == row.end() ? std::string() : python_g(found->second);
    line += pad(value, widths_[i]) + kSeparator;
  }
  *out_ << line << '\n';
}

StateDict PrintReport::state_dict() const {
  StateDict state;
  state.set_int(kPrintedRows, printed_rows_);
  return state;
}

void PrintReport::load_state_dict(const StateDict& state) {
  const int64_t printed = state.get_int(kPrintedRows);
  if (printed < 0) {
    throw StateError("PrintReport::load_state_dict", kPrintedRows,
                     fmt::format("must be >= 0, got {}", printed));
  }
  printed_rows_ = printed;
}

}  // namespace tth
