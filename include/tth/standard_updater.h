// StandardUpdater: the usual step over batches of a dataset.
//
// Each update takes the next batch (starting a new epoch at the end of one), zeroes the
// gradients, computes `loss(batch)`, back-propagates, steps the optimizer and reports the loss
// as "main/loss". The model and the optimizer are registered as "main" with the manager (so
// snapshots hold both), and the model is put in training mode before each step (an evaluator
// may have switched it to eval mode).
//
// The batches come from one of two sources:
//   * A BatchIterator (batch_iterator.h), given or built here from a dataset and
//     BatchIteratorOptions: the updater's state (saved by Trainer under state/updater/) holds
//     the iterator's epoch and position, so a snapshot taken anywhere, mid-epoch included,
//     resumes with the very batch the uninterrupted run would have taken next.
//       auto updater = std::make_shared<tth::StandardUpdater>(
//           dataset, tth::BatchIteratorOptions(64).seed(1), model, optimizer, loss);
//   * A LibTorch data loader (`torch::data::make_data_loader(...)`), yielding stacked
//     `torch::data::Example<>` batches or vectors of examples (stacked here). Its sampler's
//     position is private to LibTorch, so the updater saves nothing of it: a resume is exact
//     only at an epoch boundary; mid-epoch, the loader starts a new pass. At the end of each
//     pass the updater checks that the loader gave iters_per_epoch batches.
//
// In a data-parallel job (the hook has a process group, HookOptions::process_group), attach()
// wraps the model in a DataParallel (data_parallel.h: rank 0's parameters on every rank) and
// each update averages the gradients across the ranks between backward and the optimizer's
// step. Shard the iterator (BatchIteratorOptions::num_replicas and rank) so that each rank
// trains on its own part of every batch. The DataParallel's buckets are made then: move the
// model to its device and freeze parameters before building the Trainer, and do not wrap the
// model in a DataParallel of your own (the gradients would be averaged twice).
//
// `iters_per_epoch` is the iterator's batches_per_epoch(), or for a loader follows from the
// dataset size, its batch size and drop_last.
//
// Thread safety: training thread only.
#pragma once

#include <torch/data/example.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "tth/batch_iterator.h"
#include "tth/torch_fwd.h"
#include "tth/updater.h"

namespace tth {

class DataParallel;

/// Computes the loss of a batch (forward pass and criterion), e.g.
/// `[&](const tth::Batch& b) { return torch::nll_loss(model->forward(b.data), b.target); }`.
using LossFunction = std::function<at::Tensor(const Batch&)>;

/// Trains `model` with `optimizer` on batches of a dataset; see the header comment.
class StandardUpdater : public Updater {
 public:
  /// Trains on the batches of `iterator`, whose position is the updater's state.
  /// REQUIRES: non-null iterator, model and optimizer; a callable loss.
  StandardUpdater(std::shared_ptr<BatchIterator> iterator, std::shared_ptr<torch::nn::Module> model,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, LossFunction loss);

  /// Trains on batches of a LibTorch dataset, drawn as `options` say: the same as the
  /// constructor above with `std::make_shared<BatchIterator>(dataset, options)`.
  template <typename Dataset>
  StandardUpdater(std::shared_ptr<Dataset> dataset, BatchIteratorOptions options,
                  std::shared_ptr<torch::nn::Module> model,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, LossFunction loss)
      : StandardUpdater(std::make_shared<BatchIterator>(std::move(dataset), std::move(options)),
                        std::move(model), std::move(optimizer), std::move(loss)) {}

  /// Trains on the batches of a LibTorch data loader over `dataset_size` examples. Resumes
  /// exactly only at epoch boundaries (see the header comment).
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
  /// Like a loader, a source has no saved position: resumes are exact at epoch boundaries.
  StandardUpdater(BatchSource source, double iters_per_epoch,
                  std::shared_ptr<torch::nn::Module> model,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, LossFunction loss);

  double iters_per_epoch() const override { return iters_per_epoch_; }
  void attach(TorchTrainerHook& hook) override;
  void update() override;

  /// The updater's state: the iterator's state under "iterator/" (nothing for a loader or a
  /// batch source).
  StateDict state_dict() const override;
  /// Loads a state of state_dict(); see BatchIterator::load_state_dict for its errors.
  void load_state_dict(const StateDict& state) override;

  torch::nn::Module& model() { return *model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  /// The batch iterator; null when the batches come from a loader or a batch source.
  const std::shared_ptr<BatchIterator>& iterator() const noexcept { return iterator_; }

 private:
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

  void check_arguments() const;
  std::optional<Batch> next_from_source();

  std::shared_ptr<BatchIterator> iterator_;  // null: batches come from source_
  BatchSource source_;
  double iters_per_epoch_;
  std::shared_ptr<torch::nn::Module> model_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<DataParallel> parallel_;  // in a data-parallel job
  LossFunction loss_;
  int64_t batches_this_pass_ = 0;
};

}  // namespace tth
