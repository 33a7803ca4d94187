// TrainingState: the whole training state as one unit. Private; TorchTrainerHook owns one.
//
// It knows every component of the state under its prefix of the layout (tth/state_layout.h):
// the manager's counters, the stop trigger, the extensions and their triggers (registered by
// the manager), and the models, optimizers, LR schedulers and state objects the user adds,
// plus the random generators. It does the three things every user of the whole state needs
// (snapshots now; asynchronous writers copy it, distributed snapshots shard it): save it,
// check a given state against it, and load one.
//
// Loading checks every component first (StateError, nothing changed), then prepares every
// component (the allocations: an optimizer's new state; nothing changes yet), then applies
// the components whose load runs user code (extensions, triggers, state objects), each backed
// up first, and last the ones whose load cannot fail once prepared (models, optimizers,
// counters, generators). If a user's load_state_dict throws, what it and those before it had
// is put back and the error propagates; a failure while preparing changes nothing. Only the
// user components are backed up (they are small), so a resume needs about one state of
// memory above the model: each value is freed once applied. Non-strict loading ignores keys that
// nothing here saves and keeps current values where keys are missing: per key for a module,
// per parameter for an optimizer, all or nothing for a Stateful (whose load_state_dict
// expects its whole state). It returns what it left out and warns about it.
//
// Thread safety: none; the training thread only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tth/state_dict.h"
#include "tth/stateful.h"
#include "tth/torch_fwd.h"

namespace tth {

/// One component of the state: how to save, check and load it. Keys are relative to the
/// component's prefix. check throws StateError for what cannot load and, when not strict,
/// lists what it would leave out in `report`. prepare receives a checked state, which it may
/// consume (freeing each value once used), and returns the action that applies it: preparing
/// changes nothing and may fail; applying fails only where applying_may_fail() (user code),
/// and is then undone from a backup.
class StatePart {
 public:
  virtual ~StatePart() = default;
  virtual StateDict save() const = 0;
  virtual void check(const StateDict& given, bool strict, IncompatibleKeys& report) const;
  virtual std::function<void()> prepare(StateDict given, bool strict) = 0;
  virtual bool applying_may_fail() const { return false; }
};

/// The parts of the components the library knows. They refer to their object, which the
/// caller keeps alive as long as the part.
/// A Stateful object (extension, trigger, state object): loaded only when complete.
std::unique_ptr<StatePart> stateful_part(Stateful& object);
/// A module's parameters and buffers: loaded key by key.
std::unique_ptr<StatePart> module_part(torch::nn::Module& module);
/// An optimizer's param-group options and per-parameter state (optimizer_state.h).
std::unique_ptr<StatePart> optimizer_part(torch::optim::Optimizer& optimizer);
/// A part from two functions (the manager's counters, a scheduler, the generators).
std::unique_ptr<StatePart> function_part(std::function<StateDict()> save,
                                         std::function<void(const StateDict&)> load);

/// Checks `given` against `part` and loads it: the whole-state procedure for one component
/// (snapshot_object, load_npz). StateErrors name `what` and `file` (may be empty).
IncompatibleKeys load_part(StatePart& part, StateDict given, bool strict, const std::string& what,
                           const std::string& file = {});

/// Warns (diagnostics.h) "<what>: non-strict load kept ... and ignored ..." unless empty.
void warn_left_out(const IncompatibleKeys& report, const std::string& what);

class TrainingState {
 public:
  TrainingState();
  ~TrainingState();

  /// Adds a component under `prefix` (a state_layout section, joined with a name).
  void add(std::string prefix, std::unique_ptr<StatePart> part);
  /// User components, each under its section; the function's name ("add_model") leads
  /// error messages. Names must be non-empty, without '/', and unique per section.
  void add_model(const std::string& name, std::shared_ptr<torch::nn::Module> model);
  void add_optimizer(const std::string& name, std::shared_ptr<torch::optim::Optimizer> optimizer);
  void add_scheduler(const std::string& name, std::shared_ptr<torch::optim::LRScheduler> scheduler);
  void add_state(const std::string& name, std::shared_ptr<Stateful> object);

  const std::map<std::string, std::shared_ptr<torch::nn::Module>>& models() const noexcept {
    return models_;
  }
  const std::map<std::string, std::shared_ptr<torch::optim::Optimizer>>& optimizers()
      const noexcept {
    return optimizers_;
  }

  /// The whole state, components in the order they were added, the generators last.
  StateDict save() const;
  /// Checks, then loads with rollback; see the header comment. StateErrors name `what`.
  /// Values are released as they are applied, so when the caller hands over the only
  /// reference (a state read from a file) the load needs about one state of memory, not two.
  IncompatibleKeys load(StateDict state, bool strict, const std::string& what);

 private:
  struct Component {
    std::string prefix;
    std::unique_ptr<StatePart> part;
  };
  void check_name(const char* who, const std::string& name, bool taken) const;

  std::vector<Component> components_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> models_;
  std::map<std::string, std::shared_ptr<torch::optim::Optimizer>> optimizers_;
  std::map<std::string, std::shared_ptr<torch::optim::LRScheduler>> schedulers_;
  std::map<std::string, std::shared_ptr<Stateful>> states_;
};

}  // namespace tth
