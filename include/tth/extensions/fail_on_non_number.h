// FailOnNonNumber: stops training as soon as a parameter holds NaN or Inf.
//
// Chainer's FailOnNonNumber. A diverged model keeps training on NaNs, wasting the rest of
// the run (and snapshots of garbage); this extension checks, every iteration by default,
// every parameter of every model registered with the manager (TorchTrainerHook::models(),
// which includes the model a StandardUpdater registers) and, unless switched off, each
// parameter's gradient when it is defined. The first non-finite tensor throws
// tth::NonFiniteError, which ends training through the error path of extension.h:
//   "FailOnNonNumber: parameter 'conv1.weight' of model 'main' holds NaN at iteration 12;
//    training diverged (lower the learning rate?)"
// (for a gradient: "gradient of parameter ..."). Models are checked in name order, the
// parameters of each in registration order, a value before its gradient.
//
// Cost: one sum per floating-point tensor (NaN and Inf carry through a sum) and one
// device-to-host copy for all of them together: 0.2 ms an iteration on the example's CNN.
// Only a non-finite sum looks closer, element by element (a sum of large finite numbers can
// overflow, and that is no failure). Integer tensors are always finite and not checked.
//
// State: none. Thread safety: training thread only.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>

#include "tth/error.h"
#include "tth/extension.h"

namespace tth {

/// A model's parameter (or its gradient) holds NaN or Inf; the message names which.
class NonFiniteError : public Error {
 public:
  /// `what` is "NaN" or "Inf".
  NonFiniteError(std::string model, std::string parameter, bool gradient, std::string what,
                 int64_t iteration);

  /// The name the model is registered under ("main").
  const std::string& model() const noexcept { return model_; }
  /// The parameter's name inside the model ("conv1.weight").
  const std::string& parameter() const noexcept { return parameter_; }
  /// Whether the gradient, not the value, is non-finite.
  bool gradient() const noexcept { return gradient_; }
  /// The iteration after which the check failed.
  int64_t iteration() const noexcept { return iteration_; }

 private:
  std::string model_;
  std::string parameter_;
  bool gradient_;
  int64_t iteration_;
};

/// Options of FailOnNonNumber.
struct FailOnNonNumberOptions {
  /// Also check the gradients (those that are defined). Default true. Switch it off when
  /// non-finite gradients are expected and handled (dynamic loss scaling skips such steps).
  TORCH_ARG(bool, check_gradients) = true;
};

/// Throws NonFiniteError when a registered model's parameter is not finite; see the header
/// comment. Default trigger {1, iteration}, priority kReader, name "FailOnNonNumber".
class FailOnNonNumber : public Extension {
 public:
  explicit FailOnNonNumber(FailOnNonNumberOptions options = {}) : options_(options) {}

  void operator()(TorchTrainerHook& hook) override;

 private:
  FailOnNonNumberOptions options_;
};

}  // namespace tth
