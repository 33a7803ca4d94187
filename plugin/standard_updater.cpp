#include "tth/standard_updater.h"

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cmath>

#include "check_argument.h"
#include "tth/data_parallel.h"
#include "tth/error.h"
#include "tth/reporter.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {
constexpr char kWho[] = "StandardUpdater";
// The updater's state key of its iterator's state.
constexpr char kIterator[] = "iterator";
}  // namespace

StandardUpdater::StandardUpdater(std::shared_ptr<BatchIterator> iterator,
                                 std::shared_ptr<torch::nn::Module> model,
                                 std::shared_ptr<torch::optim::Optimizer> optimizer,
                                 LossFunction loss)
    : iterator_(std::move(iterator)),
      iters_per_epoch_(iterator_ ? iterator_->batches_per_epoch() : 0),
      model_(std::move(model)),
      optimizer_(std::move(optimizer)),
      loss_(std::move(loss)) {
  check_argument(iterator_ != nullptr, kWho, "iterator", "must not be null");
  check_arguments();
}

StandardUpdater::StandardUpdater(BatchSource source, double iters_per_epoch,
                                 std::shared_ptr<torch::nn::Module> model,
                                 std::shared_ptr<torch::optim::Optimizer> optimizer,
                                 LossFunction loss)
    : source_(std::move(source)),
      iters_per_epoch_(iters_per_epoch),
      model_(std::move(model)),
      optimizer_(std::move(optimizer)),
      loss_(std::move(loss)) {
  check_argument(static_cast<bool>(source_), kWho, "source", "must be callable");
  check_arguments();
}

void StandardUpdater::check_arguments() const {
  check_argument(model_ != nullptr, kWho, "model", "must not be null");
  check_argument(optimizer_ != nullptr, kWho, "optimizer", "must not be null");
  check_argument(static_cast<bool>(loss_), kWho, "loss", "must be callable");
  check_argument(iters_per_epoch_ > 0, kWho, "iters_per_epoch", "must be > 0", iters_per_epoch_);
}

double StandardUpdater::batches_per_pass(size_t dataset_size, size_t batch_size, bool drop_last) {
  check_argument(dataset_size > 0, kWho, "dataset_size", "must be > 0", dataset_size);
  check_argument(batch_size > 0, kWho, "the loader's batch_size", "must be > 0", batch_size);
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

void StandardUpdater::attach(TorchTrainerHook& hook) {
  hook.add_model("main", model_);
  hook.add_optimizer("main", optimizer_);
  if (hook.process_group())
    parallel_ = std::make_shared<DataParallel>(model_, hook.process_group());
}

StateDict StandardUpdater::state_dict() const {
  StateDict state;
  if (iterator_) state.merge(kIterator, iterator_->state_dict());
  return state;
}

void StandardUpdater::load_state_dict(const StateDict& state) {
  if (iterator_) iterator_->load_state_dict(state.sub(kIterator));
}

std::optional<Batch> StandardUpdater::next_from_source() {
  std::optional<Batch> batch = source_();
  if (batch) {
    ++batches_this_pass_;
    return batch;
  }
  if (batches_this_pass_ != static_cast<int64_t>(std::llround(iters_per_epoch_))) {
    throw Error(
        fmt::format("StandardUpdater: the data loader gave {} batches in a pass, but "
                    "iters_per_epoch is {}; check dataset_size",
                    batches_this_pass_, iters_per_epoch_));
  }
  batches_this_pass_ = 0;
  batch = source_();
  if (!batch) throw Error("StandardUpdater: the data loader yields no batch");
  ++batches_this_pass_;
  return batch;
}

void StandardUpdater::update() {
  std::optional<Batch> batch;
  if (iterator_) {
    batch = iterator_->next();
    // The end of an epoch; the iterator has at least one batch per epoch.
    if (!batch) batch = iterator_->next();
  } else {
    batch = next_from_source();
  }
  model_->train();
  optimizer_->zero_grad();
  at::Tensor loss = loss_(*batch);
  loss.backward();
  if (parallel_) parallel_->synchronize_gradients();  // the same step on every rank
  optimizer_->step();
  report("main/loss", loss);
}

}  // namespace tth
