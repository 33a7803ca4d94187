// DataParallel: gradient averaging for a training loop the user writes, as PyTorch's
// DistributedDataParallel does it, over a tth::ProcessGroup (process_group.h).
//
// Every rank of the job holds a replica of the same module and trains it on its own part of
// each batch (a BatchIterator with num_replicas and rank, batch_iterator.h):
//
//   tth::DataParallel parallel(model, group);   // rank 0's parameters and buffers everywhere
//   while (auto batch = batches->next()) {
//     optimizer.zero_grad();
//     torch::nn::functional::cross_entropy(model->forward(batch->data), batch->target)
//         .backward();
//     parallel.synchronize_gradients();         // every gradient := its mean over the ranks
//     optimizer.step();                         // the same step on every rank
//   }
//
// The constructor broadcasts the parameters and buffers from rank 0, so the replicas start
// equal; synchronize_gradients() then replaces each gradient by its mean over the ranks, so
// every rank's optimizer takes the same step and the replicas stay equal. When each rank's loss
// is the mean over its own batch and the ranks' batches have the same size (a sharded
// BatchIterator gives them that), the mean of the ranks' gradients is the gradient of the mean
// loss over the combined batch: N ranks with batches of B train as one process with batches of
// N * B (up to floating-point rounding in the order of the sums). Buffers (BatchNorm's running
// statistics) are broadcast by the constructor only, then each rank updates its own (DDP
// broadcasts rank 0's before every forward pass instead); call broadcast_parameters() to make
// them equal again, e.g. before an evaluation or before one rank saves a snapshot.
//
// Which parameters: those that require grad when DataParallel is built, in module.parameters()
// order (as DDP: freeze parameters, and move the module to its device, before building it). They
// are averaged in buckets of at most bucket_cap_mb, one all-reduce per bucket, each bucket holding
// parameters of one dtype and device (a parameter larger than the cap gets a bucket of its own);
// each bucket is divided by the world size before its all-reduce sums it, as DDP does, so that
// half-precision sums do not overflow. A parameter whose gradient is undefined on a rank (not used
// by this rank's forward pass) counts as a zero gradient there and gets the averaged gradient
// defined, as DDP with find_unused_parameters: every rank runs the same collectives, whatever
// graph its batch made. A parameter that no rank used keeps its undefined gradient on every rank
// (as DDP leaves it), so an optimizer's momentum or weight decay does not move it; finding those
// costs one small all-reduce per synchronize_gradients() (an int32 per parameter). The collectives'
// tensors: the gradient buckets on the parameters' device, the others on the group's device().
// Sparse gradients are not supported.
//
// The ranks must call each method the same number of times in the same order (they are
// collectives); the constructor checks that every rank's module has the same parameters and
// buffers (names, dtypes, shapes) and every rank the same bucket_cap_mb, and throws
// tth::DistributedError on every rank if not.
//
// Thread safety: none; call from the training thread, while no backward pass is running.
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <utility>
#include <vector>

#include "tth/process_group.h"

namespace tth {

/// Options of DataParallel.
struct DataParallelOptions {
  /// Gradients are averaged in buckets of at most this many MiB (one all-reduce each), as
  /// DDP's bucket_cap_mb. REQUIRES: finite and > 0. Default 25.
  TORCH_ARG(double, bucket_cap_mb) = 25;
};

/// Averages a module's gradients over the ranks of a process group; see the header comment.
class DataParallel {
 public:
  /// Broadcasts the module's parameters and buffers from rank 0 so every rank starts equal.
  /// REQUIRES: module and group not null (tth::Error naming the argument otherwise), the same
  /// module structure and bucket_cap_mb on every rank (tth::DistributedError otherwise).
  DataParallel(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<ProcessGroup> group,
               DataParallelOptions options = {});
  /// The same, for a module holder (`Net model; DataParallel parallel(model, group);`).
  template <typename Contained>
  DataParallel(const torch::nn::ModuleHolder<Contained>& module,
               std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {})
      : DataParallel(module.is_empty() ? nullptr : module.ptr(), std::move(group),
                     std::move(options)) {}
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// Call after backward, before optimizer.step(): replaces every parameter's gradient by its
  /// mean over the ranks (one all-reduce per bucket that some rank's gradients use, and one of
  /// the per-parameter use counts); a parameter no rank used keeps an undefined gradient. Throws
  /// tth::DistributedError when a collective fails, tth::Error for a sparse gradient.
  void synchronize_gradients();

  /// Broadcasts parameters and buffers from rank `root` (the constructor does it from rank 0).
  /// REQUIRES: 0 <= root < world size.
  void broadcast_parameters(int root = 0);

  /// The group it averages over.
  const std::shared_ptr<ProcessGroup>& process_group() const noexcept;

  /// Number of buckets (at most one all-reduce each per synchronize_gradients()).
  size_t bucket_count() const noexcept;

 private:
  struct Bucket;
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<ProcessGroup> group_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;
  size_t parameter_count_ = 0;  // in buckets_
};

}  // namespace tth
