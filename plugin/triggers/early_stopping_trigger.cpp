#include "tth/triggers/early_stopping_trigger.h"

#include <limits>

#include "check_argument.h"
#include "triggers/check_trigger.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

EarlyStoppingTrigger::EarlyStoppingTrigger(EarlyStoppingOptions options)
    : monitor_(std::move(options.monitor())),
      patience_(options.patience()),
      check_(trigger_or(options.check(), 1, epoch)),
      max_(trigger_or(options.max_trigger(), 100, epoch)) {
  check_argument(!monitor_.empty(), "EarlyStoppingTrigger", "monitor", "must not be empty");
  check_argument(patience_ >= 1, "EarlyStoppingTrigger", "patience", "must be >= 1", patience_);
  maximize_ = maximizes(options.mode(), monitor_);
  best_ = maximize_ ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
}

bool EarlyStoppingTrigger::operator()(const TorchTrainerHook& hook) {
  mean_.add(hook.observation(), monitor_);
  if (max_ && (*max_)(hook)) return true;
  if (!check_ || !(*check_)(hook)) return false;
  const double value = mean_.take(monitor_, "EarlyStoppingTrigger");
  if (maximize_ ? value > best_ : value < best_) {
    best_ = value;
    stale_checks_ = 0;
    return false;
  }
  return ++stale_checks_ >= patience_;
}

std::optional<Duration> EarlyStoppingTrigger::training_length() const {
  return max_ ? max_->training_length() : std::nullopt;
}

StateDict EarlyStoppingTrigger::state_dict() const {
  StateDict state;
  if (check_) state.merge("check", check_->state_dict());
  if (max_) state.merge("max_trigger", max_->state_dict());
  for (auto& entry : mean_.state_dict()) state.set(entry.first, entry.second);
  state.set_double("best", best_);
  state.set_int("checks_without_improvement", stale_checks_);
  return state;
}

void EarlyStoppingTrigger::load_state_dict(const StateDict& state) {
  if (check_) check_->load_state_dict(state.sub("check"));
  if (max_) max_->load_state_dict(state.sub("max_trigger"));
  mean_.load_state_dict(state);
  best_ = state.get_double("best");
  stale_checks_ = state.get_int("checks_without_improvement");
}

}  // namespace tth
