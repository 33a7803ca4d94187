#include "tth/triggers/best_value_trigger.h"

#include "check_argument.h"
#include "triggers/check_trigger.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

BestValueTrigger::BestValueTrigger(std::string key, std::function<bool(double, double)> better,
                                   TriggerRef check)
    : key_(std::move(key)), better_(std::move(better)), check_(trigger_or(check, 1, epoch)) {
  check_argument(!key_.empty(), "MaxValueTrigger/MinValueTrigger", "key", "must not be empty");
  check_argument(static_cast<bool>(better_), "MaxValueTrigger/MinValueTrigger", "better",
                 "must be callable");
}

bool BestValueTrigger::operator()(const TorchTrainerHook& hook) {
  mean_.add(hook.observation(), key_);
  if (!check_ || !(*check_)(hook)) return false;
  const double value = mean_.take(key_, "MaxValueTrigger/MinValueTrigger");
  if (has_best_ && !better_(value, best_)) return false;
  best_ = value;
  has_best_ = true;
  return true;
}

std::optional<double> BestValueTrigger::best() const {
  if (!has_best_) return std::nullopt;
  return best_;
}

StateDict BestValueTrigger::state_dict() const {
  StateDict state;
  if (check_) state.merge("check", check_->state_dict());
  for (auto& entry : mean_.state_dict()) state.set(entry.first, entry.second);
  state.set_double("best", best_);
  state.set_bool("has_best", has_best_);
  return state;
}

void BestValueTrigger::load_state_dict(const StateDict& state) {
  if (check_) check_->load_state_dict(state.sub("check"));
  mean_.load_state_dict(state);
  best_ = state.get_double("best");
  has_best_ = state.get_bool("has_best");
}

MaxValueTrigger::MaxValueTrigger(std::string key, TriggerRef check)
    : BestValueTrigger(
          std::move(key), [](double candidate, double best) { return candidate > best; },
          std::move(check)) {}

MinValueTrigger::MinValueTrigger(std::string key, TriggerRef check)
    : BestValueTrigger(
          std::move(key), [](double candidate, double best) { return candidate < best; },
          std::move(check)) {}

}  // namespace tth
