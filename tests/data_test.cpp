// BatchIterator (batch_iterator.h): orders, epochs, resume at any position, state checks,
// device moves and LibTorch datasets.
#include <algorithm>
#include <numeric>
#include <set>

#include "support.h"
#include "tth/batch_iterator.h"

namespace tth {
namespace {

using Indices = std::vector<size_t>;

// A batch whose data are the indices it was made of (kLong), and whose target is their double.
Batch batch_of(const Indices& indices) {
  std::vector<int64_t> values(indices.begin(), indices.end());
  at::Tensor data = torch::tensor(values, torch::kLong);
  return {data, data * 2};
}

Indices indices_of(const Batch& batch) {
  const at::Tensor data = batch.data.to(torch::kCPU).contiguous();
  return Indices(data.data_ptr<int64_t>(), data.data_ptr<int64_t>() + data.numel());
}

BatchIterator make_iterator(size_t size, BatchIteratorOptions options) {
  return BatchIterator(size, batch_of, std::move(options));
}

// The index lists of one epoch: next() until it returns nothing.
std::vector<Indices> epoch_of(BatchIterator& it) {
  std::vector<Indices> batches;
  while (auto batch = it.next()) batches.push_back(indices_of(*batch));
  return batches;
}

Indices flatten(const std::vector<Indices>& batches) {
  Indices all;
  for (const auto& batch : batches) all.insert(all.end(), batch.begin(), batch.end());
  return all;
}

Indices iota(size_t n) {
  Indices all(n);
  std::iota(all.begin(), all.end(), size_t{0});
  return all;
}

TEST(BatchIterator, SequentialOrderWithALastPartialBatch) {
  auto it = make_iterator(10, BatchIteratorOptions(4).shuffle(false));
  EXPECT_EQ(it.batches_per_epoch(), 3);
  const std::vector<Indices> expected = {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}};
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    EXPECT_EQ(it.epoch(), epoch);
    EXPECT_EQ(it.position(), 0);
    EXPECT_EQ(epoch_of(it), expected) << "epoch " << epoch;
  }
  EXPECT_EQ(it.epoch(), 2);
}

TEST(BatchIterator, CountsEpochAndPosition) {
  auto it = make_iterator(5, BatchIteratorOptions(2).shuffle(false));
  std::vector<std::pair<int64_t, int64_t>> seen;
  for (int i = 0; i < 8; ++i) {
    const bool got = it.next().has_value();
    seen.emplace_back(got ? it.epoch() : -1 - it.epoch(), it.position());
  }
  // Three batches, the end of the epoch (nothing), three batches, the end.
  EXPECT_EQ(seen, (std::vector<std::pair<int64_t, int64_t>>{
                      {0, 1}, {0, 2}, {0, 3}, {-2, 0}, {1, 1}, {1, 2}, {1, 3}, {-3, 0}}));
}

TEST(BatchIterator, ShuffledOrderIsAFreshPermutationEachEpoch) {
  auto it = make_iterator(50, BatchIteratorOptions(7).seed(3));
  std::vector<Indices> orders;
  for (int epoch = 0; epoch < 4; ++epoch) {
    const std::vector<Indices> batches = epoch_of(it);
    ASSERT_EQ(batches.size(), 8u);
    for (size_t b = 0; b + 1 < batches.size(); ++b) EXPECT_EQ(batches[b].size(), 7u);
    EXPECT_EQ(batches.back().size(), 1u);
    Indices order = flatten(batches);
    Indices sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, iota(50)) << "epoch " << epoch;
    EXPECT_NE(order, iota(50)) << "epoch " << epoch;
    for (const Indices& earlier : orders) EXPECT_NE(order, earlier) << "epoch " << epoch;
    orders.push_back(order);
  }
}

TEST(BatchIterator, OrderFollowsFromTheSeedAndEpochOnly) {
  auto a = make_iterator(30, BatchIteratorOptions(4).seed(11));
  auto b = make_iterator(30, BatchIteratorOptions(4).seed(11));
  auto other = make_iterator(30, BatchIteratorOptions(4).seed(12));
  // Another batch size cuts the same order differently.
  auto cut = make_iterator(30, BatchIteratorOptions(30).seed(11));
  torch::manual_seed(1);  // LibTorch's generator plays no part
  for (int epoch = 0; epoch < 3; ++epoch) {
    const Indices order = flatten(epoch_of(a));
    torch::manual_seed(2);
    EXPECT_EQ(flatten(epoch_of(b)), order) << "epoch " << epoch;
    EXPECT_NE(flatten(epoch_of(other)), order) << "epoch " << epoch;
    EXPECT_EQ(flatten(epoch_of(cut)), order) << "epoch " << epoch;
    EXPECT_EQ(a.indices(epoch, 2), Indices(order.begin() + 8, order.begin() + 12));
  }
  // indices() of any epoch, past or future, without moving.
  const Indices first_of_epoch_5 = a.indices(5, 0);
  while (a.epoch() < 5) epoch_of(a);
  EXPECT_EQ(indices_of(*a.next()), first_of_epoch_5);
}

// The orders of seed 2024 for a dataset of 12, computed by an independent implementation
// (Python) of splitmix64 and the Fisher-Yates shuffle that batch_iterator.h describes. A
// change here changes the batches every resumed run sees: it must be deliberate.
TEST(BatchIterator, ShuffledOrderIsPinned) {
  auto it = make_iterator(12, BatchIteratorOptions(5).seed(2024));
  EXPECT_EQ(flatten(epoch_of(it)), (Indices{1, 11, 4, 3, 9, 8, 0, 5, 10, 2, 7, 6}));
  EXPECT_EQ(flatten(epoch_of(it)), (Indices{9, 5, 3, 11, 1, 10, 4, 7, 0, 2, 8, 6}));
  EXPECT_EQ(flatten(epoch_of(it)), (Indices{1, 5, 11, 10, 3, 4, 0, 7, 9, 6, 2, 8}));
  auto other = make_iterator(12, BatchIteratorOptions(12).seed(2025));
  EXPECT_EQ(flatten(epoch_of(other)), (Indices{4, 2, 5, 1, 3, 9, 8, 7, 11, 10, 6, 0}));
  // The largest seed is a seed like any other.
  auto largest = make_iterator(12, BatchIteratorOptions(12).seed(~uint64_t{0}));
  EXPECT_EQ(largest.state_dict().get_int("seed"), -1);
}

TEST(BatchIterator, DropLastLeavesOutThePartialBatch) {
  auto sequential = make_iterator(10, BatchIteratorOptions(4).shuffle(false).drop_last(true));
  EXPECT_EQ(sequential.batches_per_epoch(), 2);
  EXPECT_EQ(epoch_of(sequential), (std::vector<Indices>{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(epoch_of(sequential), (std::vector<Indices>{{0, 1, 2, 3}, {4, 5, 6, 7}}));

  // Shuffled: the left-out examples are the tail of each epoch's permutation, so they change.
  auto shuffled = make_iterator(10, BatchIteratorOptions(4).seed(5).drop_last(true));
  auto full = make_iterator(10, BatchIteratorOptions(10).seed(5));
  std::set<size_t> left_out;
  for (int epoch = 0; epoch < 4; ++epoch) {
    const std::vector<Indices> batches = epoch_of(shuffled);
    const Indices order = flatten(epoch_of(full));
    ASSERT_EQ(batches.size(), 2u);
    EXPECT_EQ(flatten(batches), Indices(order.begin(), order.begin() + 8));
    left_out.insert(order.begin() + 8, order.end());
  }
  EXPECT_GT(left_out.size(), 2u);

  // Exactly one full batch.
  auto one = make_iterator(4, BatchIteratorOptions(4).drop_last(true));
  EXPECT_EQ(epoch_of(one).size(), 1u);
}

TEST(BatchIterator, OneExampleAndBatchesLargerThanTheDataset) {
  auto single = make_iterator(1, BatchIteratorOptions(1));
  EXPECT_EQ(epoch_of(single), (std::vector<Indices>{{0}}));
  auto large = make_iterator(3, BatchIteratorOptions(100).shuffle(false));
  EXPECT_EQ(large.batches_per_epoch(), 1);
  EXPECT_EQ(epoch_of(large), (std::vector<Indices>{{0, 1, 2}}));
}

TEST(BatchIterator, ResetGoesBackToTheStartOfTheEpoch) {
  auto it = make_iterator(9, BatchIteratorOptions(2).seed(8));
  epoch_of(it);  // into epoch 1
  const Indices first = indices_of(*it.next());
  it.next();
  EXPECT_EQ(it.position(), 2);
  it.reset();
  EXPECT_EQ(it.epoch(), 1);
  EXPECT_EQ(it.position(), 0);
  EXPECT_EQ(indices_of(*it.next()), first);
  // A whole pass after a reset is the epoch's order.
  it.reset();
  EXPECT_EQ(flatten(epoch_of(it)), flatten({it.indices(1, 0), it.indices(1, 1), it.indices(1, 2),
                                            it.indices(1, 3), it.indices(1, 4)}));
}

TEST(BatchIterator, ResumeAtEveryPositionGivesTheSameRemainingBatches) {
  for (const bool drop_last : {false, true}) {
    const auto options = BatchIteratorOptions(3).seed(17).drop_last(drop_last);
    // The uninterrupted run: three epochs, with each call's result (nothing at an epoch end).
    auto straight = make_iterator(11, options);
    std::vector<std::optional<Indices>> calls;
    std::vector<StateDict> states;  // states[i]: the state before call i
    for (int i = 0; i < 3 * 5; ++i) {
      states.push_back(straight.state_dict());
      auto batch = straight.next();
      calls.push_back(batch ? std::optional<Indices>(indices_of(*batch)) : std::nullopt);
    }
    const size_t per_epoch = drop_last ? 3 : 4;
    for (size_t i = 0; i < calls.size(); ++i) {
      SCOPED_TRACE("drop_last " + std::to_string(drop_last) + ", resume before call " +
                   std::to_string(i));
      auto resumed = make_iterator(11, options);
      resumed.load_state_dict(states[i]);
      EXPECT_EQ(resumed.epoch(), states[i].get_int("epoch"));
      EXPECT_EQ(resumed.position(), states[i].get_int("position"));
      for (size_t j = i; j < calls.size(); ++j) {
        auto batch = resumed.next();
        ASSERT_EQ(batch.has_value(), calls[j].has_value()) << "call " << j;
        if (batch) {
          EXPECT_EQ(indices_of(*batch), *calls[j]) << "call " << j;
        }
      }
      // The state is the same after the same calls.
      EXPECT_EQ(resumed.epoch(), straight.epoch());
      EXPECT_EQ(resumed.position(), straight.position());
    }
    // Every position of an epoch, the end included, was resumed from.
    EXPECT_EQ(states[per_epoch].get_int("position"), static_cast<int64_t>(per_epoch));
  }
}

TEST(BatchIterator, StateHoldsTheCountersAndWhatTheyMean) {
  auto it = make_iterator(10, BatchIteratorOptions(4).seed(99).drop_last(true));
  it.next();
  const StateDict state = it.state_dict();
  std::vector<std::string> keys;
  for (const auto& entry : state) keys.push_back(entry.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"epoch", "position", "dataset_size", "batch_size",
                                            "drop_last", "shuffle", "seed"}));
  EXPECT_EQ(state.get_int("epoch"), 0);
  EXPECT_EQ(state.get_int("position"), 1);
  EXPECT_EQ(state.get_int("dataset_size"), 10);
  EXPECT_EQ(state.get_int("batch_size"), 4);
  EXPECT_TRUE(state.get_bool("drop_last"));
  EXPECT_TRUE(state.get_bool("shuffle"));
  EXPECT_EQ(state.get_int("seed"), 99);
  EXPECT_EQ(state.tensor("epoch").scalar_type(), torch::kLong);
  EXPECT_EQ(state.tensor("shuffle").scalar_type(), torch::kBool);
}

TEST(BatchIterator, RejectsTheStateOfAnotherIterator) {
  auto source = make_iterator(10, BatchIteratorOptions(4).seed(1));
  source.next();
  const StateDict state = source.state_dict();
  struct Case {
    size_t size;
    BatchIteratorOptions options;
    std::string message;
  };
  const std::vector<Case> cases = {
      {12, BatchIteratorOptions(4).seed(1),
       "BatchIterator::load_state_dict: key 'dataset_size': was saved for dataset_size 10, "
       "but this iterator has dataset_size 12"},
      {10, BatchIteratorOptions(5).seed(1),
       "key 'batch_size': was saved for batch_size 4, but this iterator has batch_size 5"},
      {10, BatchIteratorOptions(4).seed(1).drop_last(true),
       "key 'drop_last': was saved for drop_last false, but this iterator has drop_last true"},
      {10, BatchIteratorOptions(4).seed(1).shuffle(false),
       "key 'shuffle': was saved for shuffle true, but this iterator has shuffle false"},
      {10, BatchIteratorOptions(4).seed(2),
       "key 'seed': was saved for seed 1, but this iterator has seed 2"},
  };
  for (const Case& c : cases) {
    auto target = make_iterator(c.size, c.options);
    target.next();
    target.next();
    EXPECT_THROW_WITH(target.load_state_dict(state), StateError, c.message);
    // Nothing changed.
    EXPECT_EQ(target.epoch(), 0);
    EXPECT_EQ(target.position(), 2);
  }
  // Without shuffle the seed does not matter.
  auto plain = make_iterator(10, BatchIteratorOptions(4).shuffle(false).seed(1));
  auto plain_other_seed = make_iterator(10, BatchIteratorOptions(4).shuffle(false).seed(2));
  plain.next();
  plain_other_seed.load_state_dict(plain.state_dict());
  EXPECT_EQ(plain_other_seed.position(), 1);

  // Counters outside the epoch, and a missing key.
  auto target = make_iterator(10, BatchIteratorOptions(4).seed(1));
  StateDict bad = state;
  bad.set_int("position", 4);
  EXPECT_THROW_WITH(target.load_state_dict(bad), StateError,
                    "key 'position': must be in [0, 3] (batches per epoch), got 4");
  bad = state;
  bad.set_int("epoch", -1);
  EXPECT_THROW_WITH(target.load_state_dict(bad), StateError, "key 'epoch': must be >= 0, got -1");
  bad = state;
  bad.erase("batch_size");
  EXPECT_THROW_WITH(target.load_state_dict(bad), StateError, "key 'batch_size'");
  EXPECT_EQ(target.position(), 0);
}

TEST(BatchIterator, ChecksItsArguments) {
  EXPECT_THROW_WITH(make_iterator(0, BatchIteratorOptions(4)), Error,
                    "BatchIterator: dataset_size must be > 0, got 0");
  EXPECT_THROW_WITH(make_iterator(10, BatchIteratorOptions(0)), Error,
                    "BatchIterator: batch_size must be > 0, got 0");
  EXPECT_THROW_WITH(make_iterator(10, BatchIteratorOptions(-3)), Error,
                    "BatchIterator: batch_size must be > 0, got -3");
  EXPECT_THROW_WITH(
      make_iterator(10, BatchIteratorOptions(11).drop_last(true)), Error,
      "BatchIterator: batch_size must be <= dataset_size (10) with drop_last, got 11");
  EXPECT_THROW_WITH(BatchIterator(10, nullptr, BatchIteratorOptions(4)), Error,
                    "BatchIterator: get_batch must be callable");
  auto it = make_iterator(10, BatchIteratorOptions(4));
  EXPECT_THROW_WITH(it.indices(0, 3), Error, "BatchIterator: position must be in [0, 3), got 3");
  EXPECT_THROW_WITH(it.indices(-1, 0), Error, "BatchIterator: epoch must be >= 0, got -1");
}

TEST(BatchIterator, AFailedBatchDoesNotMoveThePosition) {
  int calls = 0;
  BatchIterator it(
      6,
      [&](const Indices& indices) {
        if (++calls == 2) throw std::runtime_error("disk gone");
        return batch_of(indices);
      },
      BatchIteratorOptions(2).shuffle(false));
  it.next();
  EXPECT_THROW_WITH(it.next(), std::runtime_error, "disk gone");
  EXPECT_EQ(it.position(), 1);
  EXPECT_EQ(indices_of(*it.next()), (Indices{2, 3}));
}

TEST(BatchIterator, MovesBatchesToTheDevice) {
  auto kept = make_iterator(4, BatchIteratorOptions(2).shuffle(false));
  EXPECT_FALSE(kept.options().device().has_value());
  auto it = make_iterator(4, BatchIteratorOptions(2).shuffle(false).device(torch::kCPU));
  ASSERT_TRUE(it.options().device().has_value());
  EXPECT_EQ(*it.options().device(), torch::Device(torch::kCPU));
  const Batch batch = *it.next();
  EXPECT_EQ(batch.data.device(), torch::Device(torch::kCPU));
  EXPECT_EQ(batch.target.device(), torch::Device(torch::kCPU));
  EXPECT_EQ(indices_of(batch), (Indices{0, 1}));
  EXPECT_TRUE(test::same_tensor(batch.target, torch::tensor({0, 2}, torch::kLong)));
  // A batch without a target keeps it undefined.
  BatchIterator no_target(
      4,
      [](const Indices& indices) {
        return Batch{batch_of(indices).data, at::Tensor()};
      },
      BatchIteratorOptions(2).device(torch::kCPU));
  EXPECT_FALSE(no_target.next()->target.defined());
}

TEST(BatchIterator, MovesBatchesToTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // From ordinary and from pinned memory (moved without blocking); the values arrive.
  for (const bool pinned : {false, true}) {
    BatchIterator it(
        8,
        [&](const Indices& indices) {
          Batch batch = batch_of(indices);
          if (pinned) batch = {batch.data.pin_memory(), batch.target.pin_memory()};
          return batch;
        },
        BatchIteratorOptions(4).seed(3).device(torch::Device(torch::kCUDA, 0)));
    const Indices expected = it.indices(0, 0);
    const Batch batch = *it.next();
    EXPECT_TRUE(batch.data.is_cuda()) << pinned;
    EXPECT_TRUE(batch.target.is_cuda()) << pinned;
    EXPECT_EQ(indices_of(batch), expected) << pinned;
    EXPECT_TRUE(test::same_tensor(batch.target.cpu(), batch.data.cpu() * 2)) << pinned;
  }
}

// A LibTorch dataset of single examples: example i is ({i, -i}, i % 3).
struct Pairs : torch::data::datasets::Dataset<Pairs> {
  explicit Pairs(size_t n) : n(n) {}
  torch::data::Example<> get(size_t index) override {
    const auto i = static_cast<float>(index);
    return {torch::tensor({i, -i}), torch::tensor(static_cast<int64_t>(index % 3))};
  }
  torch::optional<size_t> size() const override { return n; }
  size_t n;
};

// A dataset that does not know its size.
struct Endless : torch::data::datasets::Dataset<Endless> {
  torch::data::Example<> get(size_t) override { return {}; }
  torch::optional<size_t> size() const override { return torch::nullopt; }
};

TEST(BatchIterator, TakesALibTorchDataset) {
  // Vectors of examples are stacked.
  BatchIterator it(std::make_shared<Pairs>(7), BatchIteratorOptions(3).seed(4));
  EXPECT_EQ(it.dataset_size(), 7u);
  EXPECT_EQ(it.batches_per_epoch(), 3);
  for (int64_t position = 0; position < 3; ++position) {
    const Indices indices = it.indices(0, position);
    const Batch batch = *it.next();
    ASSERT_EQ(batch.data.sizes(), (std::vector<int64_t>{static_cast<int64_t>(indices.size()), 2}));
    for (size_t k = 0; k < indices.size(); ++k) {
      const auto i = static_cast<float>(indices[k]);
      const auto row = static_cast<int64_t>(k);
      EXPECT_TRUE(test::same_tensor(batch.data[row], torch::tensor({i, -i})));
      EXPECT_EQ(batch.target[row].item<int64_t>(), static_cast<int64_t>(indices[k] % 3));
    }
  }
  EXPECT_FALSE(it.next().has_value());

  // A dataset that stacks its batches itself (a MapDataset with Stack) gives the same.
  auto map = Pairs(7).map(torch::data::transforms::Stack<>());
  auto stacked = std::make_shared<decltype(map)>(std::move(map));
  BatchIterator same(stacked, BatchIteratorOptions(3).seed(4));
  BatchIterator again(std::make_shared<Pairs>(7), BatchIteratorOptions(3).seed(4));
  for (int b = 0; b < 3; ++b) {
    const Batch x = *same.next();
    const Batch y = *again.next();
    EXPECT_TRUE(test::same_tensor(x.data, y.data)) << b;
    EXPECT_TRUE(test::same_tensor(x.target, y.target)) << b;
  }

  EXPECT_THROW_WITH(BatchIterator(std::shared_ptr<Pairs>(), BatchIteratorOptions(3)), Error,
                    "BatchIterator: dataset must not be null");
  EXPECT_THROW_WITH(BatchIterator(std::make_shared<Endless>(), BatchIteratorOptions(3)), Error,
                    "BatchIterator: dataset must know its size");
}

TEST(BatchIterator, ResumesThroughTheManagerState) {
  // In a user-owned loop the iterator is a state object like any other.
  auto straight =
      std::make_shared<BatchIterator>(std::make_shared<Pairs>(10), BatchIteratorOptions(4).seed(6));
  TorchTrainerHook hook{HookOptions(straight->batches_per_epoch()).out("resume_iterator")};
  hook.add_state("iterator", straight);
  for (int i = 0; i < 5; ++i) {
    hook.run_iteration([&] {
      if (!straight->next()) straight->next();
    });
  }
  const StateDict saved = hook.state_dict();
  EXPECT_EQ(saved.get_int("state/iterator/epoch"), 1);
  EXPECT_EQ(saved.get_int("state/iterator/position"), 2);
  hook.finalize();

  auto resumed =
      std::make_shared<BatchIterator>(std::make_shared<Pairs>(10), BatchIteratorOptions(4).seed(6));
  TorchTrainerHook again{HookOptions(resumed->batches_per_epoch()).out("resume_iterator")};
  again.add_state("iterator", resumed);
  again.load_state_dict(saved);
  const Batch x = *resumed->next();
  const Batch y = *straight->next();
  EXPECT_TRUE(test::same_tensor(x.data, y.data));

  // Another dataset size is refused with the key's full name.
  auto other =
      std::make_shared<BatchIterator>(std::make_shared<Pairs>(11), BatchIteratorOptions(4).seed(6));
  TorchTrainerHook third{HookOptions(other->batches_per_epoch()).out("resume_iterator")};
  third.add_state("iterator", other);
  EXPECT_THROW_WITH(third.load_state_dict(saved), StateError,
                    "key 'state/iterator/dataset_size': was saved for dataset_size 10");
}

// ---- Sharding (num_replicas > 1): a DistributedSampler. ----

// Rank `rank` of `replicas` over a dataset of `size`.
BatchIterator shard(size_t size, BatchIteratorOptions options, int64_t replicas, int64_t rank) {
  return make_iterator(size, options.num_replicas(replicas).rank(rank));
}

// Positions rank, rank + replicas, ... of `order`, `count` of them, the order repeated from its
// start past its end: what batch_iterator.h says a rank takes.
Indices strided(const Indices& order, size_t rank, size_t replicas, size_t count) {
  Indices taken;
  for (size_t i = 0; i < count; ++i) taken.push_back(order[(i * replicas + rank) % order.size()]);
  return taken;
}

TEST(BatchIterator, ShardsSplitEachEpochBetweenTheRanks) {
  const auto options = BatchIteratorOptions(3).seed(4);
  auto rank0 = shard(10, options, 2, 0);
  auto rank1 = shard(10, options, 2, 1);
  auto whole = make_iterator(10, BatchIteratorOptions(10).seed(4));  // the same epoch orders
  EXPECT_EQ(rank0.shard_size(), 5u);
  EXPECT_EQ(rank0.dataset_size(), 10u);
  EXPECT_EQ(rank0.batches_per_epoch(), 2);
  EXPECT_EQ(rank1.batches_per_epoch(), 2);
  for (int epoch = 0; epoch < 3; ++epoch) {
    SCOPED_TRACE("epoch " + std::to_string(epoch));
    const Indices order = flatten(epoch_of(whole));
    const std::vector<Indices> batches0 = epoch_of(rank0);
    const std::vector<Indices> batches1 = epoch_of(rank1);
    ASSERT_EQ(batches0.size(), 2u);
    ASSERT_EQ(batches1.size(), 2u);
    EXPECT_EQ(batches0[0].size(), 3u);
    EXPECT_EQ(batches0[1].size(), 2u);
    // Every rank strides through the one permutation of the epoch.
    EXPECT_EQ(flatten(batches0), strided(order, 0, 2, 5));
    EXPECT_EQ(flatten(batches1), strided(order, 1, 2, 5));
    // Disjoint, and together the dataset.
    Indices both = flatten(batches0);
    const Indices one = flatten(batches1);
    both.insert(both.end(), one.begin(), one.end());
    std::sort(both.begin(), both.end());
    EXPECT_EQ(both, iota(10));
  }
  // indices() gives the shard's batches too.
  const Indices share = strided(whole.indices(7, 0), 1, 2, 5);
  EXPECT_EQ(rank1.indices(7, 1), Indices(share.begin() + 3, share.end()));
}

TEST(BatchIterator, ShardsOfAnUnevenDatasetArePaddedWithTheFirstIndices) {
  // Sequential: rank 0 takes 0, 2, 4; rank 1 takes 1, 3 and then 0 again.
  auto plain0 = shard(5, BatchIteratorOptions(2).shuffle(false), 2, 0);
  auto plain1 = shard(5, BatchIteratorOptions(2).shuffle(false), 2, 1);
  EXPECT_EQ(epoch_of(plain0), (std::vector<Indices>{{0, 2}, {4}}));
  EXPECT_EQ(epoch_of(plain1), (std::vector<Indices>{{1, 3}, {0}}));

  // Shuffled, 11 examples on 2 ranks: 6 each, the epoch's first index seen twice.
  const auto options = BatchIteratorOptions(4).seed(9);
  auto rank0 = shard(11, options, 2, 0);
  auto rank1 = shard(11, options, 2, 1);
  auto whole = make_iterator(11, BatchIteratorOptions(11).seed(9));
  EXPECT_EQ(rank0.shard_size(), 6u);
  EXPECT_EQ(rank0.batches_per_epoch(), rank1.batches_per_epoch());
  EXPECT_EQ(rank0.batches_per_epoch(), 2);
  for (int epoch = 0; epoch < 2; ++epoch) {
    const Indices order = flatten(epoch_of(whole));
    const Indices one = flatten(epoch_of(rank0));
    const Indices two = flatten(epoch_of(rank1));
    EXPECT_EQ(one, strided(order, 0, 2, 6));
    EXPECT_EQ(two, strided(order, 1, 2, 6));
    EXPECT_EQ(two.back(), order.front()) << "the padding repeats the order's first index";
    std::multiset<size_t> all(one.begin(), one.end());
    all.insert(two.begin(), two.end());
    EXPECT_EQ(std::set<size_t>(all.begin(), all.end()).size(), 11u);
    EXPECT_EQ(all.size(), 12u);
    EXPECT_EQ(all.count(order.front()), 2u);
  }

  // Fewer examples than ranks: the order is repeated from its start.
  std::vector<Indices> shares;
  for (int64_t rank = 0; rank < 4; ++rank) {
    auto it = shard(3, BatchIteratorOptions(2).shuffle(false), 4, rank);
    EXPECT_EQ(it.batches_per_epoch(), 1);
    shares.push_back(flatten(epoch_of(it)));
  }
  EXPECT_EQ(shares, (std::vector<Indices>{{0}, {1}, {2}, {0}}));
}

TEST(BatchIterator, DropLastCutsTheOrderToAMultipleOfTheRanksAndDropsTheShortBatch) {
  const auto options = BatchIteratorOptions(2).seed(5).drop_last(true);
  auto rank0 = shard(11, options, 2, 0);
  auto rank1 = shard(11, options, 2, 1);
  auto whole = make_iterator(11, BatchIteratorOptions(11).seed(5));
  EXPECT_EQ(rank0.shard_size(), 5u);        // the order cut to 10
  EXPECT_EQ(rank0.batches_per_epoch(), 2);  // 2 + 2, the fifth example's batch dropped
  EXPECT_EQ(rank1.batches_per_epoch(), 2);
  for (int epoch = 0; epoch < 2; ++epoch) {
    const Indices order = flatten(epoch_of(whole));
    EXPECT_EQ(flatten(epoch_of(rank0)), strided(order, 0, 2, 4));
    EXPECT_EQ(flatten(epoch_of(rank1)), strided(order, 1, 2, 4));
  }
  // Sequential, 7 on 3 ranks: cut to 6, 2 per rank, one batch of 2 each; 6 is never seen.
  for (int64_t rank = 0; rank < 3; ++rank) {
    auto it = shard(7, BatchIteratorOptions(2).shuffle(false).drop_last(true), 3, rank);
    const auto r = static_cast<size_t>(rank);
    EXPECT_EQ(epoch_of(it), (std::vector<Indices>{{r, r + 3}})) << "rank " << rank;
  }
}

TEST(BatchIterator, ShardedResumeContinuesIdenticallyFromAnyRanksState) {
  const auto options = BatchIteratorOptions(2).seed(21);
  auto straight = shard(13, options, 3, 1);  // 5 per rank, 3 batches
  auto other_rank = shard(13, options, 3, 2);
  std::vector<std::optional<Indices>> calls;
  std::vector<StateDict> states, other_states;
  for (int i = 0; i < 2 * 4; ++i) {
    states.push_back(straight.state_dict());
    other_states.push_back(other_rank.state_dict());
    auto batch = straight.next();
    other_rank.next();
    calls.push_back(batch ? std::optional<Indices>(indices_of(*batch)) : std::nullopt);
  }
  for (size_t i = 0; i < calls.size(); ++i) {
    // Rank 1 resumed from its own state and from rank 2's (the rank is not saved).
    for (const StateDict* state : {&states[i], &other_states[i]}) {
      SCOPED_TRACE("resume before call " + std::to_string(i) +
                   (state == &states[i] ? " from its own state" : " from rank 2's state"));
      auto resumed = shard(13, options, 3, 1);
      resumed.load_state_dict(*state);
      for (size_t j = i; j < calls.size(); ++j) {
        auto batch = resumed.next();
        ASSERT_EQ(batch.has_value(), calls[j].has_value()) << "call " << j;
        if (batch) EXPECT_EQ(indices_of(*batch), *calls[j]) << "call " << j;
      }
    }
  }
}

TEST(BatchIterator, StateNamesNumReplicasOnlyWhenSharded) {
  auto sharded = shard(10, BatchIteratorOptions(2).seed(1), 2, 1);
  sharded.next();
  const StateDict state = sharded.state_dict();
  std::vector<std::string> keys;
  for (const auto& entry : state) keys.push_back(entry.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"epoch", "position", "dataset_size", "batch_size",
                                            "drop_last", "shuffle", "seed", "num_replicas"}));
  EXPECT_EQ(state.get_int("num_replicas"), 2);
  EXPECT_EQ(state.tensor("num_replicas").scalar_type(), torch::kLong);
  EXPECT_FALSE(
      make_iterator(10, BatchIteratorOptions(2).seed(1)).state_dict().contains("num_replicas"));
  // rank 0 of 1, given explicitly, is no sharding.
  EXPECT_FALSE(
      shard(10, BatchIteratorOptions(2).seed(1), 1, 0).state_dict().contains("num_replicas"));
}

TEST(BatchIterator, RejectsTheStateOfAnotherNumberOfReplicas) {
  auto two = shard(12, BatchIteratorOptions(2).seed(1), 2, 0);
  two.next();
  auto unsharded = make_iterator(12, BatchIteratorOptions(2).seed(1));
  unsharded.next();
  struct Case {
    const BatchIterator* source;
    int64_t replicas;
    std::string message;
  };
  const std::vector<Case> cases = {
      {&two, 3,
       "BatchIterator::load_state_dict: key 'num_replicas': was saved for num_replicas 2, but "
       "this iterator has num_replicas 3"},
      {&two, 1,
       "key 'num_replicas': was saved for num_replicas 2, but this iterator has "
       "num_replicas 1"},
      {&unsharded, 2,
       "key 'num_replicas': was saved for num_replicas 1, but this iterator has "
       "num_replicas 2"},
  };
  for (const Case& c : cases) {
    auto target = shard(12, BatchIteratorOptions(2).seed(1), c.replicas, 0);
    target.next();
    target.next();
    EXPECT_THROW_WITH(target.load_state_dict(c.source->state_dict()), StateError, c.message);
    EXPECT_EQ(target.epoch(), 0);
    EXPECT_EQ(target.position(), 2);
  }
}

TEST(BatchIterator, ChecksItsShardingArguments) {
  EXPECT_THROW_WITH(shard(10, BatchIteratorOptions(2), 0, 0), Error,
                    "BatchIterator: num_replicas must be >= 1, got 0");
  EXPECT_THROW_WITH(shard(10, BatchIteratorOptions(2), 2, 2), Error,
                    "BatchIterator: rank must be in [0, num_replicas 2), got 2");
  EXPECT_THROW_WITH(shard(10, BatchIteratorOptions(2), 2, -1), Error,
                    "BatchIterator: rank must be in [0, num_replicas 2), got -1");
  EXPECT_THROW_WITH(
      shard(3, BatchIteratorOptions(1).drop_last(true), 4, 0), Error,
      "BatchIterator: num_replicas must be <= dataset_size (3) with drop_last, got 4");
  EXPECT_THROW_WITH(shard(10, BatchIteratorOptions(4).drop_last(true), 3, 0), Error,
                    "BatchIterator: batch_size must be <= the examples per rank (3: dataset_size "
                    "10 / num_replicas 3) with drop_last, got 4");
  // Without drop_last a larger batch is one short batch per rank.
  EXPECT_EQ(shard(10, BatchIteratorOptions(4), 3, 0).batches_per_epoch(), 1);
}

}  // namespace
}  // namespace tth
