#include "tth/save_on_signal.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "check_argument.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/process_group.h"
#include "tth/snapshot.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

constexpr const char* kWho = "save_on_signal";

// Set by the handler, cleared by the training thread. Only a lock-free atomic may be touched
// from a handler (the signal may interrupt anything, on any thread); static storage starts at 0.
static_assert(std::atomic<int>::is_always_lock_free, "the signal flag must be lock-free");
std::atomic<int> received_flags[NSIG];

void on_signal(int signal_number) {
  if (signal_number > 0 && signal_number < NSIG) received_flags[signal_number].store(1);
}

// Which extension handles each signal; handlers are process-wide.
std::mutex owners_mutex;
const SaveOnSignal* owners[NSIG];

std::string signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGXCPU:
      return "SIGXCPU";
    case SIGALRM:
      return "SIGALRM";
    default:
      return fmt::format("signal {}", signal_number);
  }
}

// A signal the extension may take over: one that can be caught, and not one the kernel raises
// for a fault (returning from the handler would run the faulting instruction again).
bool handleable(int signal_number) {
  if (signal_number <= 0 || signal_number >= NSIG) return false;
  for (int refused : {SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) {
    if (signal_number == refused) return false;
  }
  return true;
}

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string joined;
  for (const std::string& part : parts) {
    if (!joined.empty()) joined += separator;
    joined += part;
  }
  return joined;
}

std::string names_of(const std::vector<int>& signals) {
  std::vector<std::string> names;
  for (int signal_number : signals) names.push_back(signal_name(signal_number));
  return join(names, " and ");
}

}  // namespace

SaveOnSignal::SaveOnSignal(SaveOnSignalOptions options)
    : stop_(options.stop()), snapshot_names_(std::move(options.snapshots())) {
  check_argument(!options.signals().empty(), "SaveOnSignalOptions", "signals", "must not be empty");
  for (int signal_number : options.signals()) {
    check_argument(handleable(signal_number), "SaveOnSignalOptions", "signals",
                   "must hold catchable signals that are not faults (not SIGKILL, SIGSTOP, "
                   "SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT)",
                   signal_number);
    if (std::find(signals_.begin(), signals_.end(), signal_number) == signals_.end()) {
      signals_.push_back(signal_number);
    }
  }
}

SaveOnSignal::~SaveOnSignal() { restore(); }

void SaveOnSignal::initialize(TorchTrainerHook& hook) {
  if (active()) return;
  const std::vector<std::string> names = hook.extension_names();
  std::vector<std::shared_ptr<Snapshot>> snapshots;
  if (snapshot_names_.empty()) {
    for (const std::string& name : names) {
      if (auto snapshot = std::dynamic_pointer_cast<Snapshot>(hook.extension(name))) {
        snapshots.push_back(std::move(snapshot));
      }
    }
    if (snapshots.empty()) {
      throw Error(fmt::format(
          "{}: no snapshot extension is registered with the hook, so a signal would save "
          "nothing; extend the hook with tth::snapshot() (or tth::snapshot_object()) too",
          kWho));
    }
  } else {
    for (const std::string& name : snapshot_names_) {
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        throw Error(
            fmt::format("{}: snapshots must name registered snapshot extensions, got "
                        "'{}', which is not registered (registered: {})",
                        kWho, name, join(names, ", ")));
      }
      auto snapshot = std::dynamic_pointer_cast<Snapshot>(hook.extension(name));
      if (!snapshot) {
        throw Error(
            fmt::format("{}: snapshots must name registered snapshot extensions, got "
                        "'{}', which is not a snapshot",
                        kWho, name));
      }
      snapshots.push_back(std::move(snapshot));
    }
  }
  // Extensions called after this one in an iteration would act after the save.
  std::vector<std::string> later;
  bool seen_self = false;
  for (const std::string& name : names) {
    if (seen_self) later.push_back("'" + name + "'");
    seen_self = seen_self || hook.extension(name).get() == this;
  }
  if (!later.empty()) {
    warn(
        fmt::format("{}: {} run after it in an iteration, so a save on a signal misses what they "
                    "do in that iteration; keep save_on_signal's default priority",
                    kWho, join(later, ", ")));
  }

  std::lock_guard<std::mutex> lock(owners_mutex);
  for (int signal_number : signals_) {
    if (owners[signal_number] != nullptr) {
      throw Error(fmt::format(
          "{}: {} is already handled by another active save_on_signal (another hook in this "
          "process); signal handlers are process-wide, so give each hook its own signals or "
          "finalize the other hook first",
          kWho, signal_name(signal_number)));
    }
  }
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;        // a read or wait in the training code resumes, not EINTR
  previous_.reserve(signals_.size());  // so that recording an installed handler cannot throw
  for (int signal_number : signals_) {
    received_flags[signal_number].store(0);
    struct sigaction old {};
    if (::sigaction(signal_number, &action, &old) != 0) {
      const int error = errno;
      for (size_t i = 0; i < previous_.size(); ++i) {
        ::sigaction(signals_[i], &previous_[i], nullptr);
        owners[signals_[i]] = nullptr;
      }
      previous_.clear();
      throw Error(fmt::format("{}: cannot install a handler for {}: {}", kWho,
                              signal_name(signal_number), std::strerror(error)));
    }
    previous_.push_back(old);
    owners[signal_number] = this;
  }
  snapshots_ = std::move(snapshots);
}

void SaveOnSignal::operator()(TorchTrainerHook& hook) {
  if (!active()) return;
  std::vector<int> received;
  for (int signal_number : signals_) {
    // Cleared before the save: a signal during the save is a new request.
    if (received_flags[signal_number].exchange(0) != 0) received.push_back(signal_number);
  }
  // In a data-parallel job every rank saves and stops at the same iteration, whichever ranks
  // the signal reached: they agree on it every iteration (a one-number all-reduce).
  const bool here = !received.empty();
  if (const auto& group = hook.process_group()) {
    if (group->all_true(!here)) return;
  } else if (!here) {
    return;
  }
  std::vector<std::string> paths;
  for (const auto& snapshot : snapshots_) {
    // A snapshot whose trigger fired at this iteration has saved this very state already.
    const auto& saved = snapshot->last_saved();
    const bool current = saved && saved->iteration == hook.iteration();
    paths.push_back("'" + (current ? saved->path : snapshot->save(hook)) + "'");
  }
  saved_at_ = hook.iteration();
  warn(fmt::format("{}: {} received; saved {} at iteration {}; {}", kWho,
                   here ? names_of(received) : std::string("a signal to another rank was"),
                   join(paths, ", "), hook.iteration(), stop_ ? "stopping" : "continuing"));
  if (stop_) hook.stop();
}

void SaveOnSignal::finalize(TorchTrainerHook& hook) {
  if (!active()) return;
  std::vector<int> late;
  for (int signal_number : signals_) {
    if (received_flags[signal_number].load() != 0) late.push_back(signal_number);
  }
  restore();
  snapshots_.clear();
  // A signal after the save of this iteration asked for what is saved already.
  if (!late.empty() && saved_at_ != hook.iteration()) {
    warn(fmt::format(
        "{}: {} received after the last iteration boundary (iteration {}); nothing saved for it",
        kWho, names_of(late), hook.iteration()));
  }
}

void SaveOnSignal::restore() noexcept {
  if (previous_.empty()) return;
  std::lock_guard<std::mutex> lock(owners_mutex);
  for (size_t i = 0; i < previous_.size(); ++i) {
    ::sigaction(signals_[i], &previous_[i], nullptr);
    owners[signals_[i]] = nullptr;
    received_flags[signals_[i]].store(0);
  }
  previous_.clear();
}

std::shared_ptr<SaveOnSignal> save_on_signal(SaveOnSignalOptions options) {
  return std::make_shared<SaveOnSignal>(std::move(options));
}

}  // namespace tth
