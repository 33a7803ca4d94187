#include "snapshot_filename.h"

#include <fmt/args.h>
#include <fmt/format.h>

#include <array>
#include <filesystem>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

// Ordering preference: the first field of this list that the template has.
constexpr std::array<const char*, 4> kFields = {"iteration", "epoch_detail", "epoch",
                                                "elapsed_time"};

std::string normalize(const std::string& pattern) {
  // Chainer's attribute paths name the same values: {.updater.iteration} -> {iteration}.
  static const std::regex chainer(R"(\{\.(updater\.)?)");
  return std::regex_replace(pattern, chainer, "{");
}

std::string render(const std::string& pattern, int64_t iteration, int64_t epoch,
                   double epoch_detail, double elapsed_time) {
  return fmt::format(fmt::runtime(pattern), fmt::arg("iteration", iteration),
                     fmt::arg("epoch", epoch), fmt::arg("epoch_detail", epoch_detail),
                     fmt::arg("elapsed_time", elapsed_time));
}

std::string escape(char c) {
  static const std::string special = R"(\^$.|?*+()[]{})";
  return special.find(c) != std::string::npos ? std::string("\\") + c : std::string(1, c);
}

}  // namespace

SnapshotFilename::SnapshotFilename(const std::string& pattern) : pattern_(normalize(pattern)) {
  check_argument(!pattern.empty(), "SnapshotOptions", "filename", "must not be empty");
  std::string sample;
  try {
    sample = render(pattern_, 1, 1, 1.5, 1.5);
  } catch (const fmt::format_error& error) {
    throw argument_error("SnapshotOptions", "filename",
                         fmt::format("must be a template with the fields {{iteration}}, "
                                     "{{epoch}}, {{epoch_detail}}, {{elapsed_time}} ({})",
                                     error.what()),
                         fmt::format("'{}'", pattern));
  }
  if (sample.empty() || sample.back() == '/') {
    throw argument_error("SnapshotOptions", "filename", "must name a file",
                         fmt::format("'{}'", pattern));
  }
  // Split off the directory; build a regex for the last component.
  const size_t slash = pattern_.rfind('/');
  const std::string name_part = slash == std::string::npos ? pattern_ : pattern_.substr(slash + 1);
  if (slash != std::string::npos) {
    static_directory_ = pattern_.substr(0, slash).find('{') == std::string::npos;
  }
  std::string regex;
  std::vector<std::string> groups;
  for (size_t i = 0; i < name_part.size(); ++i) {
    const char c = name_part[i];
    if ((c == '{' || c == '}') && i + 1 < name_part.size() && name_part[i + 1] == c) {
      regex += escape(c);
      ++i;
    } else if (c == '{') {
      const size_t close = name_part.find('}', i);
      const std::string field = name_part.substr(i + 1, close - i - 1);
      groups.push_back(field.substr(0, field.find(':')));
      regex += "([-+0-9.eE]+)";
      i = close;
    } else {
      regex += escape(c);
    }
  }
  name_regex_ = std::regex(regex);
  for (const char* field : kFields) {
    for (size_t g = 0; g < groups.size() && order_group_ == 0; ++g) {
      if (groups[g] == field) order_group_ = static_cast<int>(g) + 1;
    }
  }
}

std::string SnapshotFilename::format(const TorchTrainerHook& hook) const {
  return render(pattern_, hook.iteration(), hook.epoch(), hook.epoch_detail(), hook.elapsed_time());
}

std::optional<double> SnapshotFilename::progress_of(const std::string& file_name) const {
  std::smatch match;
  if (!std::regex_match(file_name, match, name_regex_)) return std::nullopt;
  if (order_group_ == 0) return 0.0;
  try {
    return std::stod(match[order_group_].str());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string SnapshotFilename::directory() const {
  const size_t slash = pattern_.rfind('/');
  return slash == std::string::npos ? std::string() : pattern_.substr(0, slash);
}

}  // namespace tth
