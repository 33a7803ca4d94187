#include "tth/extensions/fail_on_non_number.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/all.h>
#include <ATen/ops/any.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/view_as_real.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <utility>
#include <vector>

#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

std::string describe(const std::string& model, const std::string& parameter, bool gradient,
                     const std::string& what, int64_t iteration) {
  return fmt::format(
      "FailOnNonNumber: {}parameter '{}' of model '{}' holds {} at iteration {}; training "
      "diverged (lower the learning rate?)",
      gradient ? "gradient of " : "", parameter, model, what, iteration);
}

// One tensor to check and where it comes from.
struct Checked {
  std::string model;
  std::string parameter;
  bool gradient;
  at::Tensor tensor;
};

}  // namespace

NonFiniteError::NonFiniteError(std::string model, std::string parameter, bool gradient,
                               std::string what, int64_t iteration)
    : Error(describe(model, parameter, gradient, what, iteration)),
      model_(std::move(model)),
      parameter_(std::move(parameter)),
      gradient_(gradient),
      iteration_(iteration) {}

void FailOnNonNumber::operator()(TorchTrainerHook& hook) {
  at::NoGradGuard no_grad;
  std::vector<Checked> checked;
  std::vector<at::Tensor> sums;
  auto add = [&](const std::string& model, const std::string& name, bool gradient,
                 const at::Tensor& tensor) {
    // A sparse gradient (an Embedding with sparse = true) holds its numbers in values().
    at::Tensor numbers = tensor.is_sparse() ? tensor._values() : tensor;
    if (!numbers.is_floating_point() && !numbers.is_complex()) return;  // always finite
    // NaN and Inf carry through a sum, so a finite sum means finite elements; and a sum is
    // one pass without temporaries, where isfinite(t).all() made three (24x slower: 4.5 ms
    // an iteration on the example's CNN, a sixth of its step).
    at::Tensor sum = numbers.sum();
    if (sum.is_complex()) sum = at::view_as_real(sum).sum();
    sums.push_back(sum.to(at::kDouble));  // one dtype, to stack them
    checked.push_back({model, name, gradient, std::move(numbers)});
  };
  for (const auto& [model, module] : hook.models()) {
    for (const auto& item : module->named_parameters(/*recurse=*/true)) {
      add(model, item.key(), false, item.value());
      if (!options_.check_gradients()) continue;
      const at::Tensor& grad = item.value().grad();
      if (grad.defined()) add(model, item.key(), true, grad);
    }
  }
  if (sums.empty()) return;

  // All sums to the host at once: one synchronization, not one per tensor.
  const c10::Device device = sums.front().device();
  for (at::Tensor& sum : sums) {
    if (sum.device() != device) sum = sum.to(device);
  }
  const at::Tensor finite = at::isfinite(at::stack(sums)).cpu();
  const bool* ok = finite.data_ptr<bool>();
  for (std::size_t i = 0; i < checked.size(); ++i) {
    if (ok[i]) continue;
    const Checked& bad = checked[i];
    // A sum of large finite numbers can overflow; only the elements tell.
    if (at::isfinite(bad.tensor).all().item<bool>()) continue;
    const bool nan = at::isnan(bad.tensor).any().item<bool>();
    throw NonFiniteError(bad.model, bad.parameter, bad.gradient, nan ? "NaN" : "Inf",
                         hook.iteration());
  }
}

}  // namespace tth
