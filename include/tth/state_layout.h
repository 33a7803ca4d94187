// The key layout of the whole training state: the one place that names its sections.
//
// `TorchTrainerHook::state_dict()` returns one StateDict (state_dict.h) whose '/'-joined keys
// are laid out in sections: manager/, stop_trigger/, extensions/<name>/,
// extension_triggers/<name>/, models/<name>/, optimizers/<name>/, schedulers/<name>/,
// state/<name>/, rng/, and tth/ (snapshot metadata). Code never spells a section by hand: it
// joins these constants (state_layout::key). doc/state_layout.md describes every key, its
// kind and dtype; it is the one description.
//
// Names chosen by the user (models, optimizers, extensions, ...) may hold any character but
// '/', which separates keys. Thread safety: constants and a pure function.
#pragma once

#include <string>
#include <string_view>

namespace tth::state_layout {

/// The manager's counters.
inline constexpr std::string_view kManager = "manager";
inline constexpr std::string_view kIteration = "iteration";
inline constexpr std::string_view kEpoch = "epoch";
inline constexpr std::string_view kEpochDetail = "epoch_detail";
inline constexpr std::string_view kElapsedTime = "elapsed_time";
inline constexpr std::string_view kStopTriggered = "stop_triggered";

/// Components, each followed by "/<name>" (but the stop trigger, of which there is one).
inline constexpr std::string_view kStopTrigger = "stop_trigger";
inline constexpr std::string_view kExtensions = "extensions";
inline constexpr std::string_view kExtensionTriggers = "extension_triggers";
inline constexpr std::string_view kModels = "models";
inline constexpr std::string_view kOptimizers = "optimizers";
inline constexpr std::string_view kSchedulers = "schedulers";
inline constexpr std::string_view kStates = "state";
inline constexpr std::string_view kRng = "rng";

/// Inside an optimizer: param_groups/<g>/<option> and state/<g>/<i>/<field>.
inline constexpr std::string_view kParamGroups = "param_groups";
inline constexpr std::string_view kParamState = "state";
/// Inside a scheduler.
inline constexpr std::string_view kStepCount = "step_count";
/// Inside rng: the CPU generator, and cuda/<device index>.
inline constexpr std::string_view kCpu = "cpu";
inline constexpr std::string_view kCuda = "cuda";

/// Snapshot file metadata, beside the state (snapshot_file.h).
inline constexpr std::string_view kMetadata = "tth";

/// The separator of key components.
inline constexpr char kSeparator = '/';

/// Joins key components with '/': key("models", "main") == "models/main".
template <typename... Parts>
std::string key(std::string_view first, const Parts&... rest) {
  std::string result(first);
  ((result += kSeparator, result += std::string_view(rest)), ...);
  return result;
}

}  // namespace tth::state_layout
