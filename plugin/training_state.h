// TrainingState: the whole training state as one unit. Private; TorchTrainerHook owns one.
//
// It knows every component of the state under its prefix of the layout (tth/state_layout.h):
// the manager's counters, the stop trigger, the extensions and their triggers (registered by
// the manager), and the models, optimizers, LR schedulers and state objects the user adds,
// plus the random generators. It does the three things every user of the whole state needs
// (snapshots now; asynchronous writers copy it, distributed snapshots shard it): save it,
// check a given state against it, and load one.
//
// Loading checks every component first (StateError, nothing changed), then applies them one
// by one; if applying fails (a user's load_state_dict throws, memory runs out), what was
// there before is put back and the error propagates. Non-strict loading ignores keys that
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
/// lists what it would leave out in `report`; load receives a checked state.
class StatePart {
 public:
  virtual ~StatePart() = default;
  virtual StateDict save() const = 0;
  virtual void check(const StateDict& given, bool strict, IncompatibleKeys& report) const;
  virtual void load(const StateDict& given, bool strict) = 0;
};

/// A Stateful object (extension, trigger, state object): loaded only when complete.
std::unique_ptr<StatePart> stateful_part(std::shared_ptr<Stateful> object);
/// A module's parameters and buffers: loaded key by key.
std::unique_ptr<StatePart> module_part(std::shared_ptr<torch::nn::Module> module);
/// An optimizer's param-group options and per-parameter state (optimizer_state.h).
std::unique_ptr<StatePart> optimizer_part(std::shared_ptr<torch::optim::Optimizer> optimizer);

/// Checks `given` against `part` and loads it: the whole-state procedure for one component
/// (snapshot_object, load_npz). StateErrors name `what`.
IncompatibleKeys load_part(StatePart& part, const StateDict& given, bool strict,
                           const std::string& what);

/// Warns (diagnostics.h) "<what>: non-strict load kept ... and ignored ..." unless empty.
void warn_left_out(const IncompatibleKeys& report, const std::string& what);

class TrainingState {
 public:
  TrainingState();
  ~TrainingState();

  /// Adds a component under `prefix` (a state_layout section, joined with a name).
  void add(std::string prefix, std::unique_ptr<StatePart> part);
  /// User components, each under its section; `who` ("add_model") leads error messages.
  /// Names must be non-empty, without '/', and unique per section.
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
  IncompatibleKeys load(const StateDict& state, bool strict, const std::string& what);

 private:
  struct Component {
    std::string prefix;
    std::unique_ptr<StatePart> part;
  };
  void add_named(const char* who, std::string_view section, const std::string& name, bool present,
                 std::unique_ptr<StatePart> part);

  std::vector<Component> components_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> models_;
  std::map<std::string, std::shared_ptr<torch::optim::Optimizer>> optimizers_;
  std::map<std::string, std::shared_ptr<torch::optim::LRScheduler>> schedulers_;
  std::map<std::string, std::shared_ptr<Stateful>> states_;
};

/// A StatePart from two functions (the manager's counters): check is the generic one.
std::unique_ptr<StatePart> function_part(std::function<StateDict()> save,
                                         std::function<void(const StateDict&)> load);

}  // namespace tth
