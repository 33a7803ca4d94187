// Extension: something that runs alongside training. This comment is the protocol.
//
// An extension is registered with `TorchTrainerHook::extend(ext, ExtendOptions())` (or the
// positional form `extend(ext, name, trigger, priority, call_before_training)`; each unset
// option takes the extension's own default) and then
// lives through these phases, exactly as in Chainer except where noted:
//
//  1. Start (the first iteration of a user's loop, or Trainer::run): extensions are ordered by
//     priority, higher first; equal priorities keep registration order. The manager first
//     calls `resume(hook)` of every extension in that order (a snapshot's autoload restores
//     the training state here, unlike Chainer where it runs last among the initializers), then
//     `initialize(hook)` of every extension in that order, skipping an extension whose
//     trigger is already finished (Trigger::finished), so initializers see the resumed state.
//  2. If training starts at iteration 0, every extension registered with
//     `call_before_training` is called once, in priority order, in a fresh observation scope,
//     without consulting triggers.
//  3. Each iteration: a fresh observation scope (see reporter.h); the update; the iteration
//     count increases; then each extension's trigger is evaluated once, in priority order, and
//     an extension whose trigger fired is called (`operator()`) right away, so a trigger may
//     read values that a higher-priority extension reported in the same iteration. Then the
//     stop trigger is evaluated. Extensions of priority kSnapshot or lower are called only
//     after every trigger of the iteration (the stop trigger included) has been evaluated, so
//     that the trigger state a snapshot saves is that of the completed iteration
//     (pytorch-pfn-extras#166).
//  4. If the update or an extension throws: `on_error(hook, exception)` of every extension is
//     called (each guarded: an exception inside a handler is printed to stderr and
//     swallowed), then `finalize`, and the original exception is rethrown unchanged.
//  5. `finalize(hook)` of every extension runs exactly once: when training ends (the stop
//     trigger fires or `stop()` was called), on error, or when the manager is destroyed.
//
// State: `state_dict()` / `load_state_dict()` hold what the extension needs to continue after
// a resume; the manager saves it under `extensions/<name>/` and the extension's trigger under
// `extension_triggers/<name>/`. The manager checks a loaded state against `state_dict()`
// (keys, dtypes, shapes) before it calls `load_state_dict`, so a failed load changes nothing.
// State of variable structure is best kept as a JSON text.
//
// Thread safety: hooks run on the training thread; an extension that starts threads (an
// asynchronous writer) must join them in `finalize`.
#pragma once

#include <torch/arg.h>

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tth/stateful.h"
#include "tth/trigger.h"

namespace tth {

class TorchTrainerHook;

/// Standard priorities. Higher runs first.
namespace priority {
/// Extensions that write to the observation (e.g. an evaluator).
inline constexpr int kWriter = 300;
/// Extensions that change training (e.g. a learning-rate schedule).
inline constexpr int kEditor = 200;
/// Extensions that read the observation (e.g. logs). The default.
inline constexpr int kReader = 100;
/// Snapshots: called after every trigger of the iteration was evaluated.
inline constexpr int kSnapshot = -100;
}  // namespace priority

/// Base class of all extensions: every hook has an empty default; state as in Stateful.
class Extension : public Stateful {
 public:
  /// Called when the trigger fires.
  virtual void operator()(TorchTrainerHook& hook) { (void)hook; }
  /// Called once at the start, before any initialize (phase 1): restore saved state here.
  virtual void resume(TorchTrainerHook& hook) { (void)hook; }
  /// Called once at the start (phase 1), unless the trigger is finished.
  virtual void initialize(TorchTrainerHook& hook) { (void)hook; }
  /// Called when training fails (phase 4) with the exception that ended it.
  virtual void on_error(TorchTrainerHook& hook, const std::exception_ptr& error) {
    (void)hook;
    (void)error;
  }
  /// Called exactly once at the end (phase 5).
  virtual void finalize(TorchTrainerHook& hook) { (void)hook; }

  /// Name used when `extend` is given none. Default: the class name without namespaces.
  virtual std::string default_name() const;
  /// Trigger used when `extend` is given none. Default: {1, iteration}.
  virtual TriggerRef default_trigger() const { return {1, iteration}; }
  /// Priority used when `extend` is given none. Default: priority::kReader.
  virtual int default_priority() const { return priority::kReader; }
};

/// Options of make_extension: the defaults of the extension it makes.
struct ExtensionOptions {
  using Hook = std::function<void(TorchTrainerHook&)>;
  using ErrorHandler = std::function<void(TorchTrainerHook&, const std::exception_ptr&)>;
  /// Default name. Default "lambda".
  TORCH_ARG(std::string, name) = "lambda";
  /// Default trigger. Default {1, iteration}.
  TORCH_ARG(TriggerRef, trigger) = TriggerRef(1, iteration);
  /// Default priority. Default priority::kReader.
  TORCH_ARG(int, priority) = priority::kReader;
  /// Called by `initialize`. Default: nothing.
  TORCH_ARG(Hook, initializer);
  /// Called by `finalize`. Default: nothing.
  TORCH_ARG(Hook, finalizer);
  /// Called by `on_error`. Default: nothing.
  TORCH_ARG(ErrorHandler, on_error);
};

/// Options of TorchTrainerHook::extend (and Trainer::extend): each one that is not set takes
/// the extension's own default (default_name(), default_trigger(), default_priority()).
///   hook.extend(ext, tth::ExtendOptions().trigger({1000, tth::iteration}));
struct ExtendOptions {
  /// The name; a name already used gets a suffix _1, _2, ... Default: the extension's.
  TORCH_ARG(std::optional<std::string>, name);
  /// When it is called; TriggerRef::never() for never. Default: the extension's.
  TORCH_ARG(TriggerRef, trigger);
  /// Call order, higher first (tth::priority). Default: the extension's.
  TORCH_ARG(std::optional<int>, priority);
  /// Also call it once before the first iteration of a fresh run (phase 2). Default false.
  TORCH_ARG(bool, call_before_training) = false;
};

/// Wraps `fn(hook)` as an extension with the given defaults. Throws tth::Error when `fn` is
/// empty.
std::shared_ptr<Extension> make_extension(std::function<void(TorchTrainerHook&)> fn,
                                          ExtensionOptions options = {});

}  // namespace tth
