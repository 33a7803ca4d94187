// ParameterShift: the base of the extensions that move an optimizer option (the learning rate
// by default) along a schedule, Chainer's parameter shifts: ExponentialShift, StepShift,
// MultistepShift, LinearShift, WarmupShift, PolynomialShift and InverseShift (one header each
// beside this one). A shift only computes its schedule; this base does the rest, the same for
// all of them, as Chainer's shifts each do:
//
//  - The attribute (`attr`, default "lr") is an option of the optimizer's parameter groups,
//    set on EVERY group (and on the optimizer's defaults, which a group added later copies):
//      lr            any optimizer (OptimizerOptions::get_lr / set_lr)
//      momentum      SGD, RMSprop          dampening     SGD
//      weight_decay  SGD, Adam, AdamW, Adagrad, RMSprop
//      eps           Adam, AdamW, Adagrad, RMSprop
//      beta1, beta2  Adam, AdamW (the elements of `betas`, named as Chainer's Adam names them)
//      alpha         RMSprop               lr_decay      Adagrad
//    An unknown name is an error at construction; a name the optimizer's type lacks is an
//    error at initialize naming the option, the type and the options it has.
//  - The optimizer is the one given in the options or else the hook's optimizer registered
//    as "main" (TorchTrainerHook::add_optimizer), looked up at initialize; none is an error
//    listing the names registered.
//  - t counts the calls of the extension (not iterations): with the default trigger
//    {1, iteration} the t-th call comes after the t-th iteration. Each call increments t and
//    sets the schedule's value at t (a shift may leave the value alone, as WarmupShift does
//    once warmed up). The value depends on t and `init` only, not on the optimizer's
//    current value.
//  - `init` (where the shift has one) is the value at t = 0. Unset, it is the optimizer's
//    current value (of its first parameter group) at initialize, as in Chainer.
//  - initialize (extension.h, phase 1) sets the start value (init, for most shifts) in a
//    fresh run; in a resumed one it puts back the last value the schedule set, so the
//    optimizer holds the schedule's value right after a resume even when the optimizer's own
//    state was not restored (an optimizer that is not registered with the hook).
//
// State: "_t" (calls so far) and "_last_value", Chainer's keys, plus "_init" (the init that
// was used) and "_has_last_value" (whether the two hold values; Chainer's None). Saving the
// init fixes a Chainer defect: an init taken from the optimizer was not saved, so a resumed
// Chainer shift took the resumed optimizer's value (the last value) as its init. An init
// given in the options always wins over the saved one. A state loaded after training started
// takes effect at the next call.
//
// Defaults, Chainer's: trigger {1, iteration}, priority kReader, name the class name.
// Thread safety: the training thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tth/extension.h"
#include "tth/torch_fwd.h"

namespace tth {

/// Base class of the parameter shifts; see the header comment. A derived shift implements
/// value_at (and start_value where its value at t = 0 is not init).
class ParameterShift : public Extension {
 public:
  /// The attribute names a shift accepts; which an optimizer has depends on its type.
  static const std::vector<std::string>& attributes();

  /// Resolves the optimizer and init, then sets the start value (fresh run) or the last
  /// value (resumed run) on every parameter group.
  void initialize(TorchTrainerHook& hook) override;
  /// t += 1, then sets value_at(t) on every parameter group.
  void operator()(TorchTrainerHook& hook) override;
  StateDict state_dict() const override;
  /// Throws StateError for a negative "_t".
  void load_state_dict(const StateDict& state) override;

  /// The optimizer option this shift moves.
  const std::string& attr() const noexcept { return attr_; }
  /// Calls so far.
  int64_t t() const noexcept { return t_; }
  /// The value this shift set last; none before initialize.
  std::optional<double> last_value() const noexcept { return last_value_; }
  /// The init in use: the given one, else (from initialize on) the optimizer's value.
  std::optional<double> init() const noexcept { return init_ ? init_ : resolved_init_; }

 protected:
  /// `who` names the shift in error messages ("ExponentialShift"). Throws tth::Error for an
  /// attribute that is not one of attributes().
  ParameterShift(std::string who, std::string attr, std::optional<double> init,
                 std::shared_ptr<torch::optim::Optimizer> optimizer);

  /// The value after the t-th call (t >= 1) given the init in use, or nullopt to leave the
  /// optimizer's value as it is.
  virtual std::optional<double> value_at(int64_t t, double init) const = 0;
  /// The value set by initialize in a fresh run. Default: init.
  virtual double start_value(double init) const { return init; }
  /// The shift's name for messages.
  const std::string& who() const noexcept { return who_; }

 private:
  torch::optim::Optimizer& prepare(TorchTrainerHook& hook);
  void set_value(double value);

  std::string who_;
  std::string attr_;
  std::optional<double> init_;           // given in the options
  std::optional<double> resolved_init_;  // taken from the optimizer, or loaded
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  int64_t t_ = 0;
  std::optional<double> last_value_;
};

}  // namespace tth
