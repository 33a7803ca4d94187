// A snapshot file-name template: fmt named fields {iteration}, {epoch}, {epoch_detail},
// {elapsed_time} (Chainer's {.updater.iteration}, {.updater.epoch}, {.iteration}, ... are
// accepted and mean the same). Formats names for the current progress, and recognises
// existing files made from the template, ordering them by training progress. Private.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace tth {

class TorchTrainerHook;

class SnapshotFilename {
 public:
  /// Throws tth::Error naming the template if it does not format.
  explicit SnapshotFilename(const std::string& pattern);

  /// The file name for the hook's current progress.
  std::string format(const TorchTrainerHook& hook) const;
  /// The progress a file name made from this template stands for (by iteration if the
  /// template has it, else epoch_detail, epoch, elapsed_time; 0 without any field), or
  /// nothing when `file_name` was not made from it. Only the last path component is matched.
  std::optional<double> progress_of(const std::string& file_name) const;
  /// The directory part of the template (empty for none). REQUIRES: has_static_directory().
  std::string directory() const;
  /// Whether the directory part has no fields (needed to find existing files).
  bool has_static_directory() const { return static_directory_; }
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;  // normalized: Chainer's fields rewritten
  std::regex name_regex_;
  int order_group_ = 0;  // regex group of the ordering field; 0: none
  bool static_directory_ = true;
};

}  // namespace tth
