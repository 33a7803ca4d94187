#include "tth/batch_iterator.h"

#include <ATen/ops/stack.h>
#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "check_argument.h"
#include "tth/error.h"

namespace tth {

namespace {

constexpr char kWho[] = "BatchIterator";
constexpr char kLoad[] = "BatchIterator::load_state_dict";

// State keys.
constexpr char kEpoch[] = "epoch";
constexpr char kPosition[] = "position";
constexpr char kDatasetSize[] = "dataset_size";
constexpr char kBatchSize[] = "batch_size";
constexpr char kDropLast[] = "drop_last";
constexpr char kShuffle[] = "shuffle";
constexpr char kSeed[] = "seed";
constexpr char kNumReplicas[] = "num_replicas";  // only when != 1

// splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014):
// a 64-bit counter advanced by the golden gamma, with this output function. Its constants are
// part of every saved order: changing them changes what a resumed run sees.
constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next() { return mix64(state_ += kGoldenGamma); }
  // Uniform in [0, bound) without modulo bias: draws below 2^64 mod bound are rejected, so
  // the accepted range is a whole number of copies of [0, bound). REQUIRES: bound > 0.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

// Examples per rank and epoch, as DistributedSampler's num_samples: the dataset padded up to a
// multiple of num_replicas, or cut down to one with drop_last.
size_t shard_count(size_t dataset_size, int64_t num_replicas, bool drop_last) {
  const auto replicas = static_cast<size_t>(num_replicas);
  return drop_last ? dataset_size / replicas : (dataset_size + replicas - 1) / replicas;
}

int64_t batch_count(size_t dataset_size, int64_t batch_size, bool drop_last) {
  const auto size = static_cast<uint64_t>(dataset_size);
  const auto batch = static_cast<uint64_t>(batch_size);
  return static_cast<int64_t>(drop_last ? size / batch : size / batch + (size % batch != 0));
}

// The state keeps the seed's 64 bits in a kLong.
int64_t seed_bits(uint64_t seed) { return static_cast<int64_t>(seed); }

}  // namespace

BatchIterator::BatchIterator(size_t dataset_size, GetBatch get_batch, BatchIteratorOptions options)
    : dataset_size_(dataset_size), get_batch_(std::move(get_batch)), options_(std::move(options)) {
  check_argument(dataset_size_ > 0, kWho, "dataset_size", "must be > 0", dataset_size_);
  check_argument(static_cast<bool>(get_batch_), kWho, "get_batch", "must be callable");
  check_argument(options_.batch_size() > 0, kWho, "batch_size", "must be > 0",
                 options_.batch_size());
  const int64_t replicas = options_.num_replicas();
  check_argument(replicas >= 1, kWho, "num_replicas", "must be >= 1", replicas);
  check_argument(options_.rank() >= 0 && options_.rank() < replicas, kWho, "rank",
                 fmt::format("must be in [0, num_replicas {})", replicas), options_.rank());
  check_argument(!options_.drop_last() || static_cast<uint64_t>(replicas) <= dataset_size_, kWho,
                 "num_replicas",
                 fmt::format("must be <= dataset_size ({}) with drop_last", dataset_size_),
                 replicas);
  shard_size_ = shard_count(dataset_size_, replicas, options_.drop_last());
  batches_per_epoch_ = batch_count(shard_size_, options_.batch_size(), options_.drop_last());
  check_argument(batches_per_epoch_ > 0, kWho, "batch_size",
                 replicas == 1
                     ? fmt::format("must be <= dataset_size ({}) with drop_last", dataset_size_)
                     : fmt::format("must be <= the examples per rank ({}: dataset_size {} / "
                                   "num_replicas {}) with drop_last",
                                   shard_size_, dataset_size_, replicas),
                 options_.batch_size());
}

void BatchIterator::null_dataset() { throw Error("BatchIterator: dataset must not be null"); }

void BatchIterator::unsized_dataset() {
  throw Error(
      "BatchIterator: dataset must know its size (its size() returned nothing); give the "
      "size and a get_batch function instead");
}

Batch to_batch(const std::vector<Batch>& examples) {
  std::vector<at::Tensor> data, targets;
  data.reserve(examples.size());
  targets.reserve(examples.size());
  for (const Batch& example : examples) {
    data.push_back(example.data);
    targets.push_back(example.target);
  }
  return {at::stack(data), at::stack(targets)};
}

std::vector<size_t> BatchIterator::permutation(int64_t epoch) const {
  std::vector<size_t> order(dataset_size_);
  std::iota(order.begin(), order.end(), size_t{0});
  SplitMix64 random(mix64(mix64(options_.seed()) + static_cast<uint64_t>(epoch)));
  // Fisher-Yates: position i takes a uniform pick among the positions not yet fixed, [0, i].
  for (size_t i = order.size() - 1; i > 0; --i) {
    std::swap(order[i], order[random.below(static_cast<uint64_t>(i) + 1)]);
  }
  return order;
}

std::vector<size_t> BatchIterator::indices(int64_t epoch, int64_t position) const {
  check_argument(epoch >= 0, kWho, "epoch", "must be >= 0", epoch);
  check_argument(position >= 0 && position < batches_per_epoch_, kWho, "position",
                 fmt::format("must be in [0, {})", batches_per_epoch_), position);
  const auto batch = static_cast<size_t>(options_.batch_size());
  const size_t begin = static_cast<size_t>(position) * batch;
  const size_t end = std::min(begin + batch, shard_size_);
  std::vector<size_t> order;  // the epoch's order when shuffled and not kept in order_
  const std::vector<size_t>* shuffled = nullptr;
  if (options_.shuffle()) {
    if (epoch != order_epoch_) order = permutation(epoch);
    shuffled = epoch == order_epoch_ ? &order_ : &order;
  }
  const auto replicas = static_cast<size_t>(options_.num_replicas());
  const auto rank = static_cast<size_t>(options_.rank());
  std::vector<size_t> result;
  result.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) {
    // Position i of this rank's shard is position i * replicas + rank of the epoch's order,
    // padded by starting that order again (only without drop_last can this pass its end).
    const size_t at = (i * replicas + rank) % dataset_size_;
    result.push_back(shuffled != nullptr ? (*shuffled)[at] : at);
  }
  return result;
}

std::optional<Batch> BatchIterator::next() {
  if (position_ == batches_per_epoch_) {
    ++epoch_;
    position_ = 0;
    return std::nullopt;
  }
  if (options_.shuffle() && order_epoch_ != epoch_) {
    order_ = permutation(epoch_);
    order_epoch_ = epoch_;
  }
  Batch batch = get_batch_(indices(epoch_, position_));
  if (options_.device()) {
    const c10::Device device = *options_.device();
    auto move = [&](at::Tensor& tensor) {
      if (!tensor.defined() || tensor.device() == device) return;
      // Only a CPU tensor can be pinned, and asking a CPU-only LibTorch needs no GPU backend.
      const bool pinned = !device.is_cpu() && tensor.is_cpu() && tensor.is_pinned();
      tensor = tensor.to(device, /*non_blocking=*/pinned);
    };
    move(batch.data);
    move(batch.target);
  }
  ++position_;
  return batch;
}

StateDict BatchIterator::state_dict() const {
  StateDict state;
  state.set_int(kEpoch, epoch_);
  state.set_int(kPosition, position_);
  state.set_int(kDatasetSize, static_cast<int64_t>(dataset_size_));
  state.set_int(kBatchSize, options_.batch_size());
  state.set_bool(kDropLast, options_.drop_last());
  state.set_bool(kShuffle, options_.shuffle());
  state.set_int(kSeed, seed_bits(options_.seed()));
  if (options_.num_replicas() != 1) state.set_int(kNumReplicas, options_.num_replicas());
  return state;
}

void BatchIterator::load_state_dict(const StateDict& state) {
  auto expect = [&](const char* key, auto saved, auto current) {
    if (saved != current) {
      throw StateError(kLoad, key,
                       fmt::format("was saved for {} {}, but this iterator has {} {}; the saved "
                                   "position means other batches here",
                                   key, saved, key, current));
    }
  };
  expect(kDatasetSize, state.get_int(kDatasetSize), static_cast<int64_t>(dataset_size_));
  expect(kBatchSize, state.get_int(kBatchSize), options_.batch_size());
  expect(kDropLast, state.get_bool(kDropLast), options_.drop_last());
  expect(kShuffle, state.get_bool(kShuffle), options_.shuffle());
  // Without shuffle the seed means nothing.
  if (options_.shuffle()) {
    expect(kSeed, static_cast<uint64_t>(state.get_int(kSeed)), options_.seed());
  }
  // Before the position check: the number of batches per epoch depends on it.
  expect(kNumReplicas, state.contains(kNumReplicas) ? state.get_int(kNumReplicas) : int64_t{1},
         options_.num_replicas());
  const int64_t epoch = state.get_int(kEpoch);
  const int64_t position = state.get_int(kPosition);
  if (epoch < 0) throw StateError(kLoad, kEpoch, fmt::format("must be >= 0, got {}", epoch));
  if (position < 0 || position > batches_per_epoch_) {
    throw StateError(kLoad, kPosition,
                     fmt::format("must be in [0, {}] (batches per epoch), got {}",
                                 batches_per_epoch_, position));
  }
  epoch_ = epoch;
  position_ = position;
}

}  // namespace tth
