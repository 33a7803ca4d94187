#include "tth/standard_updater.h"

#include <ATen/ops/stack.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cmath>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/reporter.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

StandardUpdater::StandardUpdater(BatchSource source, double iters_per_epoch,
                                 std::shared_ptr<torch::nn::Module> model,
                                 std::shared_ptr<torch::optim::Optimizer> optimizer,
                                 LossFunction loss)
    : source_(std::move(source)),
      iters_per_epoch_(iters_per_epoch),
      model_(std::move(model)),
      optimizer_(std::move(optimizer)),
      loss_(std::move(loss)) {
  const char* who = "StandardUpdater";
  check_argument(static_cast<bool>(source_), who, "source", "must be callable");
  check_argument(model_ != nullptr, who, "model", "must not be null");
  check_argument(optimizer_ != nullptr, who, "optimizer", "must not be null");
  check_argument(static_cast<bool>(loss_), who, "loss", "must be callable");
  check_argument(iters_per_epoch_ > 0, who, "iters_per_epoch", "must be > 0", iters_per_epoch_);
}

double StandardUpdater::batches_per_pass(size_t dataset_size, size_t batch_size, bool drop_last) {
  check_argument(dataset_size > 0, "StandardUpdater", "dataset_size", "must be > 0", dataset_size);
  check_argument(batch_size > 0, "StandardUpdater", "the loader's batch_size", "must be > 0",
                 batch_size);
  const size_t batches =
      drop_last ? dataset_size / batch_size : (dataset_size + batch_size - 1) / batch_size;
  if (batches == 0) {
    throw Error(
        fmt::format("StandardUpdater: dataset_size {} gives no full batch of {} with "
                    "drop_last",
                    dataset_size, batch_size));
  }
  return static_cast<double>(batches);
}

void StandardUpdater::null_loader() { throw Error("StandardUpdater: loader must not be null"); }

Batch StandardUpdater::to_batch(const std::vector<Batch>& examples) {
  std::vector<at::Tensor> data, targets;
  data.reserve(examples.size());
  targets.reserve(examples.size());
  for (const Batch& example : examples) {
    data.push_back(example.data);
    targets.push_back(example.target);
  }
  return {at::stack(data), at::stack(targets)};
}

void StandardUpdater::attach(TorchTrainerHook& hook) {
  hook.add_model("main", model_);
  hook.add_optimizer("main", optimizer_);
}

void StandardUpdater::update() {
  std::optional<Batch> batch = source_();
  if (!batch) {
    if (batches_this_pass_ != static_cast<int64_t>(std::llround(iters_per_epoch_))) {
      throw Error(
          fmt::format("StandardUpdater: the data loader gave {} batches in a pass, but "
                      "iters_per_epoch is {}; check dataset_size",
                      batches_this_pass_, iters_per_epoch_));
    }
    batches_this_pass_ = 0;
    batch = source_();
    if (!batch) throw Error("StandardUpdater: the data loader yields no batch");
  }
  ++batches_this_pass_;
  model_->train();
  optimizer_->zero_grad();
  at::Tensor loss = loss_(*batch);
  loss.backward();
  optimizer_->step();
  report("main/loss", loss);
}

}  // namespace tth
