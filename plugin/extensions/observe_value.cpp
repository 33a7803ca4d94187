#include "tth/extensions/observe_value.h"

#include <fmt/format.h>
#include <torch/optim/optimizer.h>

#include <utility>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

std::shared_ptr<Extension> make_observer(const char* who, std::string key,
                                         std::function<double(TorchTrainerHook&)> fn,
                                         TriggerRef trigger) {
  check_argument(!key.empty(), who, "key", "must not be empty");
  check_argument(static_cast<bool>(fn), who, "fn", "must be callable");
  // Unset means the documented default, as Chainer's: every epoch.
  if (!trigger.is_set()) trigger = TriggerRef(1, epoch);
  return make_extension(
      [key = std::move(key), fn = std::move(fn)](TorchTrainerHook& hook) {
        const double value = fn(hook);
        hook.observation().insert_or_assign(key, value);
      },
      ExtensionOptions().name(who).trigger(std::move(trigger)).priority(priority::kWriter));
}

double learning_rate(const TorchTrainerHook& hook, const std::string& optimizer_name) {
  const auto& optimizers = hook.optimizers();
  auto found = optimizers.find(optimizer_name);
  if (found == optimizers.end()) {
    std::string registered;
    for (const auto& entry : optimizers) {
      registered += fmt::format("{}'{}'", registered.empty() ? "registered: " : ", ", entry.first);
    }
    throw Error(
        fmt::format("observe_lr: no optimizer named '{}' is registered ({}); register it with "
                    "add_optimizer or pass the right optimizer_name",
                    optimizer_name, registered.empty() ? std::string("none is") : registered));
  }
  const auto& groups = found->second->param_groups();
  if (groups.empty()) {
    throw Error(fmt::format("observe_lr: optimizer '{}' has no parameter group", optimizer_name));
  }
  return groups.front().options().get_lr();
}

}  // namespace

std::shared_ptr<Extension> observe_value(std::string key,
                                         std::function<double(TorchTrainerHook&)> fn,
                                         TriggerRef trigger) {
  return make_observer("observe_value", std::move(key), std::move(fn), std::move(trigger));
}

std::shared_ptr<Extension> observe_lr(std::string optimizer_name, std::string key,
                                      TriggerRef trigger) {
  check_argument(!optimizer_name.empty(), "observe_lr", "optimizer_name", "must not be empty");
  return make_observer(
      "observe_lr", std::move(key),
      [optimizer_name = std::move(optimizer_name)](TorchTrainerHook& hook) {
        return learning_rate(hook, optimizer_name);
      },
      std::move(trigger));
}

}  // namespace tth
