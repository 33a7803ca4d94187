// A snapshot file-name template: fmt named fields {iteration}, {epoch}, {epoch_detail},
// {elapsed_time} (Chainer's {.updater.iteration}, {.updater.epoch}, {.iteration}, ... are
// accepted and mean the same). Formats names for the current progress, and recognises
// existing files made from the template, ordering them by training progress. Private.
//
// Autoload and retention trust the progress read back from a name, so a template is accepted
// only when every name it renders parses back to the values it was rendered from, and to
// nothing else: {iteration} and {epoch} take no spec, `d`, or a zero-padded width (`08d`);
// {epoch_detail} and {elapsed_time} no spec (the shortest form that reads back exactly, e.g.
// `1.5`, `2`, `1e-05`) or a fixed precision (`.2f`). Two fields must be separated by a
// character neither of them prints. Every rendered component must fit NAME_MAX also for
// iterations up to 10^18, the last one together with atomic_write's temp-name suffix.
//
// Thread safety: immutable after construction; const members may run concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace tth {

class TorchTrainerHook;

class SnapshotFilename {
 public:
  /// Throws tth::Error "SnapshotOptions: filename must ..., got '<pattern>'" if the template
  /// does not format, uses a field or spec that does not parse back, puts two fields side by
  /// side, or can render a name longer than NAME_MAX (see the header comment).
  explicit SnapshotFilename(const std::string& pattern);

  /// The file name for the hook's current progress.
  std::string format(const TorchTrainerHook& hook) const;
  /// The progress a file name made from this template stands for (by iteration if the
  /// template has it, else epoch_detail, epoch, elapsed_time; 0 without any field), or
  /// nothing when `file_name` was not made from it: it must equal the template rendered with
  /// the values read from it. Only the last path component is matched.
  std::optional<double> progress_of(const std::string& file_name) const;
  /// The directory part of the template (empty for none). REQUIRES: has_static_directory().
  std::string directory() const;
  /// Whether the directory part has no fields (needed to find existing files).
  bool has_static_directory() const { return static_directory_; }
  /// The template, with Chainer's fields rewritten ({.updater.iteration} -> {iteration}).
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;            // normalized: Chainer's fields rewritten
  std::size_t name_start_;         // where the last component starts in pattern_
  std::regex name_regex_;          // the last component, one group per field
  std::vector<int> group_fields_;  // per regex group: the field's index in kFields
  int order_field_ = -1;           // index in kFields of the ordering field; -1: none
  bool static_directory_ = true;
};

}  // namespace tth
