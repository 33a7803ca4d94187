#include "tth/key_maps.h"

#include <c10/util/Type.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <map>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "check_argument.h"
#include "tth/state_layout.h"

namespace tth {

namespace {

constexpr const char* kChainerOptimizerState = "chainer_optimizer_state";

// Chainer's state entries of an update rule -> LibTorch's per-parameter state fields; "" skips
// the entry. Chainer's `t` counts the steps of each rule, as Adam's `step` does (both are
// incremented before the step that uses them); SGD keeps no count.
using FieldMap = std::map<std::string, std::string, std::less<>>;

FieldMap chainer_fields(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer) != nullptr ||
      dynamic_cast<const torch::optim::AdamW*>(&optimizer) != nullptr) {
    return {{"m", "exp_avg"}, {"v", "exp_avg_sq"}, {"vhat", "max_exp_avg_sq"}, {"t", "step"}};
  }
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer) != nullptr) {
    return {{"v", "momentum_buffer"}, {"t", ""}};
  }
  throw argument_error(kChainerOptimizerState, "optimizer", "must be SGD, Adam or AdamW",
                       c10::demangle(typeid(optimizer).name()));
}

}  // namespace

std::string chainer_names(const std::string& key) {
  static const std::vector<std::pair<std::string, std::string>> kLeaves = {
      {"W", "weight"},
      {"b", "bias"},
      {"gamma", "weight"},
      {"beta", "bias"},
      {"avg_mean", "running_mean"},
      {"avg_var", "running_var"}};
  std::string name = key;
  std::replace(name.begin(), name.end(), '/', '.');
  const size_t dot = name.rfind('.');
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  for (const auto& [chainer, torch] : kLeaves) {
    if (leaf == chainer) return name.substr(0, name.size() - leaf.size()) + torch;
  }
  return name;
}

std::string pytorch_names(const std::string& key) {
  constexpr std::string_view kDataParallel = "module.";
  constexpr std::string_view kCompiled = "_orig_mod.";
  std::string_view rest = key;
  std::string out;
  out.reserve(key.size());
  bool leading = true;  // DataParallel's prefix only leads (a wrapper wraps the whole model)
  while (!rest.empty()) {
    const size_t dot = rest.find('.');
    const std::string_view component =
        dot == std::string_view::npos ? rest : rest.substr(0, dot + 1);  // with its dot
    rest.remove_prefix(component.size());
    // Only a component followed by more of the key is a wrapper's: a leaf keeps its name.
    const bool wrapper =
        !rest.empty() && (component == kCompiled || (leading && component == kDataParallel));
    if (wrapper) continue;
    leading = false;
    out += component;
  }
  return out;
}

LoadWeightsOptions chainer_optimizer_state(const torch::nn::Module& module,
                                           const torch::optim::Optimizer& optimizer) {
  namespace layout = state_layout;
  FieldMap fields = chainer_fields(optimizer);
  // Each optimizer parameter's place (g, i), found by identity: the optimizer knows tensors,
  // not names.
  std::unordered_map<const void*, std::pair<size_t, size_t>> places;
  const auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto [place, inserted] =
          places.emplace(params[i].unsafeGetTensorImpl(), std::make_pair(g, i));
      check_argument(inserted, kChainerOptimizerState, "optimizer", "must hold each parameter once",
                     fmt::format("one at param_groups[{}][{}] and again at [{}][{}]",
                                 place->second.first, place->second.second, g, i));
    }
  }
  // LibTorch name -> "state/<g>/<i>/" for the module's parameters that the optimizer holds.
  std::unordered_map<std::string, std::string> prefixes;
  for (const auto& item : module.named_parameters()) {
    const auto place = places.find(item.value().unsafeGetTensorImpl());
    if (place == places.end()) continue;
    prefixes.emplace(item.key(),
                     layout::key(layout::kParamState, fmt::to_string(place->second.first),
                                 fmt::to_string(place->second.second), ""));
  }
  LoadWeightsOptions options;
  options.keep_optimizer_options(true);  // Chainer saves no hyper-parameters
  options.key_map([fields = std::move(fields), prefixes](const std::string& key) {
    const size_t slash = key.rfind(layout::kSeparator);
    if (slash == std::string::npos) return key;
    const auto prefix = prefixes.find(chainer_names(key.substr(0, slash)));
    const auto field = fields.find(std::string_view(key).substr(slash + 1));
    if (prefix == prefixes.end() || field == fields.end()) return key;  // a strict load names it
    return field->second.empty() ? std::string() : prefix->second + field->second;
  });
  const auto* sgd = dynamic_cast<const torch::optim::SGD*>(&optimizer);
  if (sgd == nullptr) return options;
  // Chainer's velocity v is -lr times LibTorch's buffer: "state/<g>/<i>/momentum_buffer" ->
  // the divisor -lr of group g.
  std::unordered_map<std::string, double> divisors;
  for (size_t g = 0; g < groups.size(); ++g) {
    const double lr = static_cast<const torch::optim::SGDOptions&>(groups[g].options()).lr();
    check_argument(lr != 0, kChainerOptimizerState, "optimizer",
                   "must have a non-zero lr in every group (Chainer's velocity is -lr times "
                   "LibTorch's momentum buffer)",
                   fmt::format("lr 0 in param_groups[{}]", g));
    for (size_t i = 0; i < groups[g].params().size(); ++i) {
      divisors.emplace(
          layout::key(layout::kParamState, fmt::to_string(g), fmt::to_string(i), "momentum_buffer"),
          -lr);
    }
  }
  options.value_map(
      [divisors = std::move(divisors)](const std::string& key, const at::Tensor& value) {
        const auto divisor = divisors.find(key);
        return divisor == divisors.end() ? value : value / divisor->second;
      });
  return options;
}

}  // namespace tth
