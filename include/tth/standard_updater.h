// StandardUpdater: the usual step over a LibTorch data loader.
//
// Each update takes the next batch from the loader (starting a new pass at the end of one),
// zeroes the gradients, computes `loss(batch)`, back-propagates, steps the optimizer and
// reports the loss as "main/loss". The model and the optimizer are registered as "main" with
// the manager (so snapshots hold both), and the model is put in training mode before each
// step (an evaluator may have switched it to eval mode).
//
// Any LibTorch loader works (`torch::data::make_data_loader(...)`), whether it yields stacked
// `torch::data::Example<>` batches or vectors of examples (stacked here). `iters_per_epoch`
// follows from the dataset size and the loader's batch size and drop_last; at the end of
// each pass the updater checks that the loader gave that many batches.
//
// Thread safety: training thread only.
#pragma once

#include <torch/data/example.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "tth/torch_fwd.h"
#include "tth/updater.h"

namespace tth {

/// A batch of inputs and targets.
using Batch = torch::data::Example<>;
/// Computes the loss of a batch (forward pass and criterion), e.g.
/// `[&](const tth::Batch& b) { return torch::nll_loss(model->forward(b.data), b.target); }`.
using LossFunction = std::function<at::Tensor(const Batch&)>;

/// Trains `model` with `optimizer` on the batches of a data loader; see the header comment.
class StandardUpdater : public Updater {
 public:
  /// REQUIRES: non-null loader, model and optimizer; a callable loss; dataset_size > 0.
  template <typename DataLoader>
  StandardUpdater(std::unique_ptr<DataLoader> loader, size_t dataset_size,
                  std::shared_ptr<torch::nn::Module> model,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, LossFunction loss)
      : StandardUpdater(std::shared_ptr<DataLoader>(std::move(loader)), dataset_size,
                        std::move(model), std::move(optimizer), std::move(loss)) {}

  /// Same, for a loader shared with the caller.
  template <typename DataLoader>
  StandardUpdater(std::shared_ptr<DataLoader> loader, size_t dataset_size,
                  std::shared_ptr<torch::nn::Module> model,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, LossFunction loss)
      : StandardUpdater(batches_of(loader), batches_per_pass(loader.get(), dataset_size),
                        std::move(model), std::move(optimizer), std::move(loss)) {}

  /// A source of batches: returns the next batch, or nothing at the end of a pass (the next
  /// call starts a new pass).
  using BatchSource = std::function<std::optional<Batch>()>;
  /// Builds the updater from a batch source that yields `iters_per_epoch` batches per pass.
  StandardUpdater(BatchSource source, double iters_per_epoch,
                  std::shared_ptr<torch::nn::Module> model,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, LossFunction loss);

  double iters_per_epoch() const override { return iters_per_epoch_; }
  void attach(TorchTrainerHook& hook) override;
  void update() override;

  torch::nn::Module& model() { return *model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }

 private:
  static Batch to_batch(Batch batch) { return batch; }
  static Batch to_batch(const std::vector<Batch>& examples);

  template <typename DataLoader>
  static double batches_per_pass(const DataLoader* loader, size_t dataset_size) {
    if (loader == nullptr) null_loader();
    const auto& options = loader->options();
    return batches_per_pass(dataset_size, options.batch_size, options.drop_last);
  }
  static double batches_per_pass(size_t dataset_size, size_t batch_size, bool drop_last);
  [[noreturn]] static void null_loader();

  template <typename DataLoader>
  static BatchSource batches_of(std::shared_ptr<DataLoader> loader) {
    if (!loader) null_loader();
    using Iterator = decltype(loader->begin());
    auto position = std::make_shared<std::optional<Iterator>>();
    return [loader, position]() -> std::optional<Batch> {
      if (!*position) position->emplace(loader->begin());
      if (**position == loader->end()) {
        position->reset();
        return std::nullopt;
      }
      Batch batch = to_batch(***position);
      ++**position;
      return batch;
    };
  }

  BatchSource source_;
  double iters_per_epoch_;
  std::shared_ptr<torch::nn::Module> model_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  LossFunction loss_;
  int64_t batches_this_pass_ = 0;
};

}  // namespace tth
