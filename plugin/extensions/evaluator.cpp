#include "tth/extensions/evaluator.h"

#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <utility>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/reporter.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

// Puts a model in eval mode and gives every submodule back its own mode when destroyed. Not
// the root's mode alone: `train(true)` would also switch on a submodule the user froze in eval
// mode (a BatchNorm kept at its running statistics).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& model) : modules_(model.modules()) {
    modes_.reserve(modules_.size());
    for (const auto& module : modules_) modes_.push_back(module->is_training());
    model.eval();
  }
  ~EvalModeGuard() {
    // modules() lists a module before its descendants, and train() is recursive, so each
    // module ends with the mode set last: its own.
    for (std::size_t i = 0; i < modules_.size(); ++i) modules_[i]->train(modes_[i]);
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  std::vector<std::shared_ptr<torch::nn::Module>> modules_;
  std::vector<bool> modes_;
};

}  // namespace

Evaluator::Evaluator(BatchLoop batches, std::shared_ptr<torch::nn::Module> model,
                     EvalFunction eval_fn, EvaluatorOptions options)
    : batches_(std::move(batches)),
      model_(std::move(model)),
      eval_fn_(std::move(eval_fn)),
      options_(std::move(options)),
      prefix_(options_.name()) {
  const char* who = "Evaluator";
  check_argument(static_cast<bool>(batches_), who, "batches", "must be callable");
  check_argument(model_ != nullptr, who, "model", "must not be null");
  check_argument(static_cast<bool>(eval_fn_), who, "eval_fn", "must be callable");
  check_argument(!options_.name().empty(), who, "options.name", "must not be empty");
}

void Evaluator::null_loader() { throw Error("Evaluator: loader must not be null"); }

Evaluator::Evaluator(std::shared_ptr<BatchIterator> iterator,
                     std::shared_ptr<torch::nn::Module> model, EvalFunction eval_fn,
                     EvaluatorOptions options)
    : Evaluator(
          [iterator](const std::function<void(const Batch&)>& visit) {
            iterator->reset();
            while (std::optional<Batch> batch = iterator->next()) visit(*batch);
          },
          std::move(model), std::move(eval_fn), std::move(options)) {
  if (!iterator) null_loader();
}

std::map<std::string, double> Evaluator::evaluate() {
  DictSummary summary;
  int64_t batches = 0;
  {
    EvalModeGuard eval_mode(*model_);
    at::NoGradGuard no_grad;
    batches_([&](const Batch& batch) {
      ++batches;
      Observation observation;
      {
        ObservationScope scope(observation);
        eval_fn_(batch);
      }
      summary.add(observation);
    });
  }
  if (batches == 0) {
    throw Error(fmt::format(
        "Evaluator '{}': the validation data gave no batch; check the data loader (an empty "
        "dataset, or drop_last with fewer examples than one batch)",
        prefix_));
  }
  std::map<std::string, double> result;
  for (const auto& [key, mean] : summary.means()) result.emplace(prefix_ + "/" + key, mean);
  return result;
}

void Evaluator::operator()(TorchTrainerHook& hook) {
  for (const auto& [key, mean] : evaluate()) hook.observation().insert_or_assign(key, mean);
}

void Evaluator::initialize(TorchTrainerHook& hook) {
  for (const std::string& name : hook.extension_names()) {
    if (hook.extension(name).get() == this) {
      prefix_ = name;
      return;
    }
  }
}

}  // namespace tth
