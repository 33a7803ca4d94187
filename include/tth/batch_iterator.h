// BatchIterator: batches of a dataset in an order that a snapshot can resume mid-epoch.
//
// LibTorch's DataLoader keeps its sampler's position private, so a training loop built on it
// resumes exactly only at an epoch boundary. A BatchIterator owns the whole order instead:
// epoch e visits every index of [0, dataset_size) once, in index order, or (shuffle) in a
// permutation that follows from (seed, e) alone, cut into batches of batch_size (the last one
// smaller, or dropped with drop_last). Its state is two counters, the epoch and the batches
// taken in it, so loading them continues with exactly the batch the saved run would have taken
// next, whatever happened in between.
//
//   auto it = std::make_shared<tth::BatchIterator>(
//       dataset, tth::BatchIteratorOptions(64).seed(1).device(torch::kCUDA));
//   while (auto batch = it->next()) { ... }   // one epoch; the next loop runs the next one
//
// The permutation does not come from LibTorch's generator (whose algorithms and seeding may
// change between versions), nor from the <random> distributions (whose algorithms are left to
// the standard library): it is an unbiased Fisher-Yates shuffle driven by splitmix64, both
// written in plugin/batch_iterator.cpp, so an order is the same on every machine, compiler and
// LibTorch version. The generator of epoch e starts from mix(mix(seed) + e), where mix is
// splitmix64's output function; each swap partner is drawn without bias by rejection.
//
// Sharding (num_replicas > 1) makes it a DistributedSampler, as PyTorch's: in a data-parallel
// job every rank builds its iterator with the same options and seed, plus num_replicas (the
// world size) and its own rank. Every rank computes the same order of epoch e as above; then
// without drop_last the order is padded to a multiple of num_replicas by repeating its first
// indices (from the start again if the dataset is smaller than num_replicas), and with
// drop_last it is cut to the largest multiple of num_replicas. Rank r takes the positions
// r, r + num_replicas, r + 2 num_replicas, ... of that order, and cuts its share into batches
// as above. So the ranks see disjoint parts of the dataset (but for the padding) that together
// cover it, and every rank has the same number of batches per epoch, which keeps their
// collectives (DataParallel's gradient all-reduce) in step. The one drop_last flag means both
// PyTorch flags: DistributedSampler's (cut the order to a multiple of num_replicas) and
// DataLoader's (leave out the rank's last short batch). Users of LibTorch's DataLoader have
// torch::data::samplers::DistributedRandomSampler for the same split, but not the resume.
//
// State (Stateful, e.g. registered with TorchTrainerHook::add_state, or saved by
// StandardUpdater): "epoch" and "position" (kLong), plus what they are only meaningful for:
// "dataset_size", "batch_size" (kLong), "drop_last", "shuffle" (kBool), "seed" (kLong, the
// bits of the uint64) and, only when num_replicas != 1, "num_replicas" (kLong; so a state
// saved without sharding has the same keys as before sharding existed). Loading a state saved
// for another value of any of those (a state without "num_replicas" was saved for 1) throws
// tth::StateError naming the key, and changes nothing. The rank is not saved: the ranks are
// at the same epoch and position, so one rank's snapshot resumes every rank.
//
// Thread safety: none; use an iterator from one thread.
#pragma once

#include <c10/core/Device.h>
#include <torch/arg.h>
#include <torch/data/example.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "tth/stateful.h"

namespace tth {

/// A batch of inputs and targets.
using Batch = torch::data::Example<>;

/// A batch as a LibTorch dataset or loader gives it: stacked already (returned as is), or a
/// vector of examples, stacked here as torch::data::transforms::Stack would.
inline Batch to_batch(Batch batch) { return batch; }
Batch to_batch(const std::vector<Batch>& examples);

/// Options of BatchIterator (and of StandardUpdater's dataset constructor).
struct BatchIteratorOptions {
  /// REQUIRES: batch_size > 0.
  explicit BatchIteratorOptions(int64_t batch_size) : batch_size_(batch_size) {}
  /// Examples per batch. No default.
  TORCH_ARG(int64_t, batch_size);
  /// Visits the examples in a new random order each epoch. Default true.
  TORCH_ARG(bool, shuffle) = true;
  /// The order of epoch e follows from (seed, e) only. Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Leaves out the last batch of an epoch when it is smaller than batch_size. Default false.
  TORCH_ARG(bool, drop_last) = false;
  /// Shards each epoch over this many ranks (the job's world size); see the header comment.
  /// REQUIRES: num_replicas >= 1. Default 1: no sharding.
  TORCH_ARG(int64_t, num_replicas) = 1;
  /// This iterator's shard. REQUIRES: 0 <= rank < num_replicas. Default 0.
  TORCH_ARG(int64_t, rank) = 0;
  /// Where batches are moved (without blocking when the dataset gives pinned memory and the
  /// device is a GPU). Default none: batches stay where the dataset made them.
  TORCH_ARG(std::optional<c10::Device>, device);
};

/// Resumable batches of a dataset; see the header comment.
class BatchIterator : public Stateful {
 public:
  /// Makes the batch of the given dataset indices (in this order).
  using GetBatch = std::function<Batch(const std::vector<size_t>& indices)>;

  /// REQUIRES: dataset_size > 0; a callable get_batch; batch_size > 0; num_replicas >= 1;
  /// 0 <= rank < num_replicas; with drop_last, num_replicas <= dataset_size and batch_size <=
  /// dataset_size / num_replicas (at least one batch per epoch). Throws tth::Error naming the
  /// argument otherwise.
  BatchIterator(size_t dataset_size, GetBatch get_batch, BatchIteratorOptions options);

  /// Batches of a LibTorch dataset (torch::data::datasets): one whose size() is known and
  /// whose get_batch(indices) returns a stacked Example<> (e.g. `.map(Stack<>())`) or a vector
  /// of Example<> (a plain Dataset<Self>; stacked here). The iterator shares the dataset.
  template <typename Dataset>
  BatchIterator(std::shared_ptr<Dataset> dataset, BatchIteratorOptions options)
      : BatchIterator(size_of(dataset.get()), batches_of(dataset), std::move(options)) {}

  /// The next batch of the current epoch, or nothing at the end of it (the next call then
  /// starts the next epoch). If making the batch throws, the position does not move.
  std::optional<Batch> next();

  /// Batches in one epoch of this rank's shard (an integer: the last partial batch counts
  /// unless drop_last); the same on every rank.
  double batches_per_epoch() const noexcept { return static_cast<double>(batches_per_epoch_); }
  /// The current epoch: the number of epochs finished before it (0 at the start).
  int64_t epoch() const noexcept { return epoch_; }
  /// Batches taken in the current epoch, in [0, batches_per_epoch()].
  int64_t position() const noexcept { return position_; }
  /// Goes back to the start of the current epoch, for one pass over the data (evaluation).
  void reset() noexcept { position_ = 0; }

  /// The indices of batch `position` of epoch `epoch` (of this rank's shard), as next() would
  /// give them.
  /// REQUIRES: epoch >= 0 and 0 <= position < batches_per_epoch().
  std::vector<size_t> indices(int64_t epoch, int64_t position) const;

  /// The options it was built with.
  const BatchIteratorOptions& options() const noexcept { return options_; }
  /// Examples in the dataset (all ranks' shards together).
  size_t dataset_size() const noexcept { return dataset_size_; }
  /// Examples in this rank's shard of an epoch (padding included, drop_last's cut excluded):
  /// the dataset size without sharding; the same on every rank.
  size_t shard_size() const noexcept { return shard_size_; }

  /// The counters and what they mean; see the header comment for the keys.
  StateDict state_dict() const override;
  /// Throws tth::StateError naming the key for a state of another dataset size, batch size,
  /// drop_last, shuffle, seed or num_replicas, or with a position outside the epoch; nothing
  /// changes then. The state of any rank of the job loads into every rank.
  void load_state_dict(const StateDict& state) override;

 private:
  template <typename Dataset>
  static size_t size_of(const Dataset* dataset) {
    if (dataset == nullptr) null_dataset();
    const auto size = dataset->size();
    if (!size) unsized_dataset();
    return *size;
  }
  template <typename Dataset>
  static GetBatch batches_of(std::shared_ptr<Dataset> dataset) {
    return [dataset = std::move(dataset)](const std::vector<size_t>& indices) {
      return to_batch(dataset->get_batch(indices));
    };
  }
  [[noreturn]] static void null_dataset();
  [[noreturn]] static void unsized_dataset();

  // The order of epoch `epoch`'s indices (shuffle only).
  std::vector<size_t> permutation(int64_t epoch) const;

  size_t dataset_size_;
  size_t shard_size_;
  GetBatch get_batch_;
  BatchIteratorOptions options_;
  int64_t batches_per_epoch_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<size_t> order_;  // permutation(order_epoch_), kept for the current epoch
  int64_t order_epoch_ = -1;
};

}  // namespace tth
