// ProcessGroup (tth/process_group.h) and DataParallel (tth/data_parallel.h) on 2 ranks over
// 127.0.0.1.

// The complete c10d type behind ProcessGroup::c10d(), for from_c10d.
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif

#include "distributed_support.h"
#include "support.h"
#include "tth/batch_iterator.h"
#include "tth/data_parallel.h"

namespace tth {
namespace {

using test::join_group;
using test::run_ranks;
using test::TempDir;

TEST(DistributedChild, DISABLED_Collectives) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  ASSERT_EQ(group->world_size(), 2);
  std::vector<at::Tensor> sum{torch::full({3}, rank + 1.0)};
  group->all_reduce_sum(sum);
  EXPECT_TRUE(torch::equal(sum[0], torch::full({3}, 3.0)));
  std::vector<at::Tensor> from_one{torch::full({2}, static_cast<double>(rank))};
  group->broadcast(from_one, 1);
  EXPECT_TRUE(torch::equal(from_one[0], torch::full({2}, 1.0)));
  EXPECT_EQ(group->broadcast_string(rank == 0 ? "from rank 0 \xff\n" : "", 0),
            "from rank 0 \xff\n");
  EXPECT_EQ(group->all_gather(10 * rank + 7), (std::vector<int64_t>{7, 17}));
  EXPECT_FALSE(group->all_true(rank == 0));
  EXPECT_TRUE(group->all_true(true));
  group->barrier();
}

TEST(ProcessGroup, CollectivesOnTwoRanks) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Collectives", 2, dir.path()));
}

TEST(DistributedChild, DISABLED_PeerDies) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group(std::chrono::seconds(30));
  if (group->rank() == 1) std::_Exit(3);  // dies without a word
  const auto start = std::chrono::steady_clock::now();
  try {
    group->barrier();
    group->barrier();
    FAIL() << "a barrier with a dead rank returned";
  } catch (const DistributedError& error) {
    EXPECT_THAT(error.what(), ::testing::HasSubstr("barrier failed on rank 0 of 2"));
    EXPECT_THAT(error.what(), ::testing::HasSubstr("timeout (30 s)"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(25))
      << "a closed connection is noticed before the timeout";
}

TEST(ProcessGroup, ADeadRankFailsTheOthersCollectiveWithAClearError) {
  TempDir dir;
  const auto ranks = run_ranks("PeerDies", 2, dir.path());
  EXPECT_EQ(ranks[1].exit_code, 3);
  EXPECT_EQ(ranks[0].exit_code, 0) << ranks[0].output;
}

TEST(ProcessGroup, BadOptionsNameTheArgument) {
  EXPECT_THAT([] { ProcessGroup group(DistributedOptions(2, 2)); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr(
                  "DistributedOptions: rank must be in [0, world_size 2), got 2")));
  EXPECT_THAT([] { ProcessGroup group(DistributedOptions(0, 0)); },
              ::testing::ThrowsMessage<Error>(
                  ::testing::HasSubstr("DistributedOptions: world_size must be >= 1, got 0")));
  EXPECT_THAT([] { ProcessGroup group(DistributedOptions(1, 0).backend("mpi")); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("backend must be")));
}

// Rendezvous through rank 0's TCPStore on 127.0.0.1 (the port is the argument).
TEST(DistributedChild, DISABLED_TcpRendezvous) {
  if (!test::is_rank()) GTEST_SKIP();
  ProcessGroup group(DistributedOptions(test::test_world_size(), test::test_rank())
                         .master_port(std::stoi(test::rank_argument()))
                         .timeout(std::chrono::seconds(20)));
  EXPECT_EQ(group.all_gather(group.rank() + 40), (std::vector<int64_t>{40, 41}));
}

TEST(ProcessGroup, RanksMeetThroughATcpStoreOnRankZero) {
  TempDir dir;
  test::expect_all_succeeded(
      run_ranks("TcpRendezvous", 2, dir.path(), std::to_string(test::free_port())));
}

TEST(ProcessGroup, OneRankJobNeedsNoPeer) {
  TempDir dir;
  ProcessGroup group(DistributedOptions(1, 0).init_file((dir.path() / "store").string()));
  std::vector<at::Tensor> t{torch::ones({2})};
  group.all_reduce_sum(t);
  EXPECT_TRUE(torch::equal(t[0], torch::ones({2})));
  EXPECT_EQ(group.rank(), 0);
  EXPECT_EQ(group.world_size(), 1);
  EXPECT_EQ(group.device(), c10::Device(c10::kCPU));
  EXPECT_EQ(group.broadcast_string("text", 0), "text");
  EXPECT_EQ(group.all_gather(-5), (std::vector<int64_t>{-5}));
  EXPECT_FALSE(group.all_true(false));
}

TEST(ProcessGroup, FromC10dOfAGlooGroupCollectsOnTheCpu) {
  TempDir dir;
  ProcessGroup made(DistributedOptions(1, 0).init_file((dir.path() / "store").string()));
  auto wrapped = ProcessGroup::from_c10d(made.c10d(), std::chrono::seconds(7));
  EXPECT_EQ(wrapped->device(), c10::Device(c10::kCPU));
  EXPECT_EQ(wrapped->timeout(), std::chrono::seconds(7));
  EXPECT_EQ(wrapped->broadcast_string("via c10d", 0), "via c10d");
  EXPECT_THROW_WITH(ProcessGroup::from_c10d({}, std::chrono::seconds(1)), Error,
                    "ProcessGroup::from_c10d: group must not be null");
}

TEST(ProcessGroup, ACollectiveThatCannotStartSaysSo) {
  TempDir dir;
  ProcessGroup group(DistributedOptions(1, 0).init_file((dir.path() / "store").string()));
  // A device Gloo does not take, refused when the collective starts. (Gloo checks dtypes in
  // its worker thread, so a bad dtype fails in wait() instead.)
  std::vector<at::Tensor> on_meta{torch::empty({2}, torch::TensorOptions().device(torch::kMeta))};
  try {
    group.all_reduce_sum(on_meta);
    FAIL() << "an all-reduce of a meta tensor started";
  } catch (const DistributedError& error) {
    EXPECT_THAT(error.what(), ::testing::HasSubstr(
                                  "ProcessGroup: all_reduce could not start on rank 0 of 1 (check "
                                  "this rank's tensors: their dtype, device (cpu for this group)"));
    EXPECT_THAT(error.what(), ::testing::Not(::testing::HasSubstr("another rank died")));
  }
}

// ---- DataParallel ----

// Two layers, plus a branch `extra` that only the rows of `mask` use: a rank that passes no
// mask leaves extra's gradients undefined.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : a(register_module("a", torch::nn::Linear(4, 8))),
        b(register_module("b", torch::nn::Linear(8, 3))),
        extra(register_module("extra", torch::nn::Linear(4, 3))) {}
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask) {
    at::Tensor y = b(torch::relu(a(x)));
    if (mask.defined()) y = y + mask.unsqueeze(1) * extra(x);
    return y;
  }
  torch::nn::Linear a, b, extra;
};
TORCH_MODULE(Net);

constexpr size_t kExamples = 16;
constexpr int64_t kBatch = 4;  // per rank
constexpr int kEpochs = 3;

// The fixed dataset: the same on every rank.
std::pair<at::Tensor, at::Tensor> dataset() {
  torch::manual_seed(1234);
  at::Tensor x = torch::randn({static_cast<int64_t>(kExamples), 4});
  at::Tensor y = torch::randn({static_cast<int64_t>(kExamples), 3});
  return {x, y};
}

at::Tensor rows(const at::Tensor& t, const std::vector<size_t>& indices) {
  return t.index_select(0, torch::tensor(std::vector<int64_t>(indices.begin(), indices.end())));
}

BatchIterator rank_batches(int64_t rank) {
  return BatchIterator(
      kExamples, [](const std::vector<size_t>&) { return Batch{}; },
      BatchIteratorOptions(kBatch).seed(7).num_replicas(2).rank(rank));
}

// One step: gradients from scratch (set to none, so an unused parameter's stays undefined),
// the mean squared error over the batch, backward.
void backward(Net& net, const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask) {
  for (auto& parameter : net->parameters()) parameter.mutable_grad() = at::Tensor();
  torch::mse_loss(net->forward(x, mask), y).backward();
}

torch::optim::SGD sgd(Net& net) {
  return torch::optim::SGD(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
}

// What the job must equal: one process over the ranks' combined batches (rank 0's rows use the
// extra branch), from rank 0's initial parameters.
Net single_process_reference() {
  const auto [x, y] = dataset();
  torch::manual_seed(100);  // rank 0's initialization
  Net net;
  auto optimizer = sgd(net);
  const BatchIterator shard0 = rank_batches(0), shard1 = rank_batches(1);
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    for (int64_t position = 0; position < shard0.batches_per_epoch(); ++position) {
      const auto i0 = shard0.indices(epoch, position), i1 = shard1.indices(epoch, position);
      const at::Tensor mask = torch::cat({torch::ones({static_cast<int64_t>(i0.size())}),
                                          torch::zeros({static_cast<int64_t>(i1.size())})});
      backward(net, torch::cat({rows(x, i0), rows(x, i1)}), torch::cat({rows(y, i0), rows(y, i1)}),
               mask);
      optimizer.step();
    }
  }
  return net;
}

// Every parameter equal to rank 0's, bit for bit.
void expect_equal_to_rank0(ProcessGroup& group, Net& net) {
  for (const auto& entry : net->named_parameters()) {
    std::vector<at::Tensor> rank0{entry.value().detach().clone()};
    group.broadcast(rank0, 0);
    EXPECT_TRUE(torch::equal(rank0[0], entry.value())) << entry.key();
  }
}

TEST(DistributedChild, DISABLED_DataParallelAverages) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  const bool tiny = test::rank_argument() == "tiny";
  const Net reference = single_process_reference();

  torch::manual_seed(100 + rank);  // a different start on each rank
  Net net;
  Net initial;  // rank 0's start, for the broadcast check
  {
    torch::manual_seed(100);
    Net rank0_start;
    initial = rank0_start;
  }
  ASSERT_EQ(!torch::equal(net->a->weight, initial->a->weight), rank == 1);
  DataParallel parallel(net, group, DataParallelOptions().bucket_cap_mb(tiny ? 1e-5 : 25));
  EXPECT_EQ(parallel.process_group(), group);
  // Six float tensors of one device: one bucket, or one each under a tiny cap.
  EXPECT_EQ(parallel.bucket_count(), tiny ? 6u : 1u);
  for (const auto& entry : net->named_parameters()) {
    EXPECT_TRUE(torch::equal(entry.value(), initial->named_parameters()[entry.key()]))
        << "broadcast " << entry.key();
  }

  const auto [x, y] = dataset();
  auto optimizer = sgd(net);
  BatchIterator batches = rank_batches(rank);
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    int64_t steps = 0;
    for (int64_t position = 0; position < batches.batches_per_epoch(); ++position, ++steps) {
      const auto indices = batches.indices(epoch, position);
      // Only rank 0 uses the extra branch.
      const at::Tensor mask =
          rank == 0 ? torch::ones({static_cast<int64_t>(indices.size())}) : at::Tensor();
      backward(net, rows(x, indices), rows(y, indices), mask);
      EXPECT_EQ(net->extra->weight.grad().defined(), rank == 0);
      parallel.synchronize_gradients();
      ASSERT_TRUE(net->extra->weight.grad().defined()) << "the unused parameter's mean";
      optimizer.step();
    }
    EXPECT_EQ(steps, 2);
  }

  expect_equal_to_rank0(*group, net);
  for (const auto& entry : net->named_parameters()) {
    const at::Tensor expected = reference->named_parameters()[entry.key()];
    EXPECT_TRUE(torch::allclose(entry.value(), expected, 1e-5, 1e-6))
        << entry.key() << ": " << (entry.value() - expected).abs().max().item<float>();
    EXPECT_FALSE(torch::equal(entry.value(), initial->named_parameters()[entry.key()]))
        << entry.key() << " was trained";
  }
}

TEST(DataParallel, AveragesLikeOneProcessOverTheCombinedBatch) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelAverages", 2, dir.path()));
}

TEST(DataParallel, AveragesLikeOneProcessWithOneBucketPerParameter) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelAverages", 2, dir.path(), "tiny"));
}

// Without averaging the ranks drift apart: the check above can fail.
TEST(DistributedChild, DISABLED_DataParallelWithoutSynchronizingDiverges) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  torch::manual_seed(100 + rank);
  Net net;
  DataParallel parallel(net, group);
  const auto [x, y] = dataset();
  auto optimizer = sgd(net);
  BatchIterator batches = rank_batches(rank);
  backward(net, rows(x, batches.indices(0, 0)), rows(y, batches.indices(0, 0)), at::Tensor());
  optimizer.step();
  std::vector<at::Tensor> rank0{net->a->weight.detach().clone()};
  group->broadcast(rank0, 0);
  EXPECT_EQ(torch::equal(rank0[0], net->a->weight), rank == 0);
}

TEST(DataParallel, RanksDivergeWithoutSynchronizing) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelWithoutSynchronizingDiverges", 2, dir.path()));
}

TEST(DistributedChild, DISABLED_DataParallelBroadcastsParametersAndBuffers) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  torch::manual_seed(10 + rank);
  auto net = std::make_shared<torch::nn::Module>();
  auto linear = net->register_module("linear", torch::nn::Linear(3, 2));
  auto norm = net->register_module("norm", torch::nn::BatchNorm1d(2));
  {
    torch::NoGradGuard no_grad;
    norm->running_mean.fill_(rank + 1.0);
    norm->num_batches_tracked.fill_(rank + 5);
  }
  DataParallel parallel(net, group);
  EXPECT_TRUE(torch::equal(norm->running_mean, torch::full({2}, 1.0)));
  EXPECT_EQ(norm->num_batches_tracked.item<int64_t>(), 5);

  // Rank 1's values everywhere.
  {
    torch::NoGradGuard no_grad;
    norm->running_var.fill_(10.0 * (rank + 1));
    linear->weight.fill_(rank - 3.0);
  }
  parallel.broadcast_parameters(1);
  EXPECT_TRUE(torch::equal(norm->running_var, torch::full({2}, 20.0)));
  EXPECT_TRUE(torch::equal(linear->weight, torch::full({2, 3}, -2.0)));
  // Checked before any collective, so no rank is left waiting.
  EXPECT_THROW_WITH(parallel.broadcast_parameters(2), Error,
                    "DataParallel::broadcast_parameters: root must be a rank in [0, 2), got 2");
  group->barrier();
}

TEST(DataParallel, BroadcastsParametersAndBuffersFromTheRoot) {
  TempDir dir;
  test::expect_all_succeeded(
      run_ranks("DataParallelBroadcastsParametersAndBuffers", 2, dir.path()));
}

TEST(DistributedChild, DISABLED_DataParallelModulesDiffer) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  torch::nn::Linear net(4, rank == 0 ? 8 : 9);
  try {
    DataParallel parallel(net, group);
    FAIL() << "different modules were accepted";
  } catch (const DistributedError& error) {
    EXPECT_THAT(error.what(),
                ::testing::HasSubstr("DataParallel: the ranks' modules or options differ"));
    if (rank == 1) {
      EXPECT_THAT(error.what(), ::testing::HasSubstr("rank 1 of 2 has 'parameter weight: float "
                                                     "[9, 4] requires grad' where rank 0 has "
                                                     "'parameter weight: float [8, 4] requires "
                                                     "grad'"));
    } else {
      EXPECT_THAT(error.what(), ::testing::HasSubstr("another rank's error names its difference"));
    }
  }
  group->barrier();  // the group is still in step
}

TEST(DataParallel, DifferentModulesOnTheRanksAreAnErrorOnEveryRank) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelModulesDiffer", 2, dir.path()));
}

// Different bucket caps would pair different buckets in the all-reduces.
TEST(DistributedChild, DISABLED_DataParallelCapsDiffer) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  torch::manual_seed(5);
  Net net;
  try {
    DataParallel parallel(net, group, DataParallelOptions().bucket_cap_mb(rank == 0 ? 25 : 1e-5));
    FAIL() << "different bucket caps were accepted";
  } catch (const DistributedError& error) {
    EXPECT_THAT(error.what(),
                ::testing::HasSubstr("DataParallel: the ranks' modules or options differ"));
    if (rank == 1) {
      EXPECT_THAT(error.what(), ::testing::HasSubstr("rank 1 of 2 has 'bucket_cap_mb 1e-05' "
                                                     "where rank 0 has 'bucket_cap_mb 25'"));
    } else {
      EXPECT_THAT(error.what(), ::testing::HasSubstr("another rank's error names its difference"));
    }
  }
  group->barrier();  // the group is still in step
}

TEST(DataParallel, DifferentBucketCapsOnTheRanksAreAnErrorOnEveryRank) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelCapsDiffer", 2, dir.path()));
}

// A branch that no rank uses keeps an undefined gradient everywhere, so that momentum and weight
// decay leave it alone; the rest is trained and stays equal on the ranks.
TEST(DistributedChild, DISABLED_DataParallelUnusedOnEveryRank) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  torch::manual_seed(100 + rank);
  Net net;
  DataParallel parallel(
      net, group, DataParallelOptions().bucket_cap_mb(test::rank_argument() == "tiny" ? 1e-5 : 25));
  const at::Tensor extra_weight = net->extra->weight.detach().clone();
  const at::Tensor extra_bias = net->extra->bias.detach().clone();
  const at::Tensor a_weight = net->a->weight.detach().clone();
  const auto [x, y] = dataset();
  torch::optim::SGD optimizer(net->parameters(),
                              torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.1));
  BatchIterator batches = rank_batches(rank);
  for (int64_t position = 0; position < batches.batches_per_epoch(); ++position) {
    const auto indices = batches.indices(0, position);
    backward(net, rows(x, indices), rows(y, indices), at::Tensor());  // no rank uses extra
    parallel.synchronize_gradients();
    EXPECT_FALSE(net->extra->weight.grad().defined());
    EXPECT_FALSE(net->extra->bias.grad().defined());
    ASSERT_TRUE(net->a->weight.grad().defined());
    optimizer.step();
  }
  EXPECT_TRUE(torch::equal(net->extra->weight, extra_weight));
  EXPECT_TRUE(torch::equal(net->extra->bias, extra_bias));
  EXPECT_FALSE(torch::equal(net->a->weight, a_weight)) << "the used layers were trained";
  expect_equal_to_rank0(*group, net);
}

TEST(DataParallel, AParameterNoRankUsedKeepsAnUndefinedGradient) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelUnusedOnEveryRank", 2, dir.path()));
}

TEST(DataParallel, AParameterNoRankUsedKeepsAnUndefinedGradientWithOneBucketEach) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelUnusedOnEveryRank", 2, dir.path(), "tiny"));
}

// Each bucket is divided before the sum: two float16 gradients of 40000 (float16's largest
// finite value is 65504) average to 40000 rather than to inf.
TEST(DistributedChild, DISABLED_DataParallelHalfPrecisionDoesNotOverflow) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  auto module = std::make_shared<torch::nn::Module>();
  at::Tensor weight = module->register_parameter("weight", torch::zeros({3}, torch::kHalf));
  DataParallel parallel(module, group);
  weight.mutable_grad() = torch::full({3}, 40000.0, torch::kHalf);
  parallel.synchronize_gradients();
  EXPECT_TRUE(torch::equal(weight.grad(), torch::full({3}, 40000.0, torch::kHalf)))
      << weight.grad();
}

TEST(DataParallel, HalfPrecisionGradientsAreDividedBeforeTheSum) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("DataParallelHalfPrecisionDoesNotOverflow", 2, dir.path()));
}

std::shared_ptr<ProcessGroup> one_rank_group(const TempDir& dir) {
  return std::make_shared<ProcessGroup>(
      DistributedOptions(1, 0).init_file((dir.path() / "store").string()));
}

TEST(DataParallel, OneRankKeepsTheGradientsAndLeavesUnusedOnesUndefined) {
  TempDir dir;
  auto group = one_rank_group(dir);
  torch::manual_seed(3);
  Net net;
  DataParallel parallel(net, group, DataParallelOptions().bucket_cap_mb(1e-4));
  EXPECT_GT(parallel.bucket_count(), 1u);
  torch::manual_seed(4);
  backward(net, torch::randn({5, 4}), torch::randn({5, 3}), at::Tensor());
  // Gradients as views of other memory, and not contiguous: copied in and out by value.
  net->b->weight.mutable_grad() = net->b->weight.grad().t().contiguous().t();
  ASSERT_FALSE(net->b->weight.grad().is_contiguous());
  std::map<std::string, at::Tensor> before;
  for (const auto& entry : net->named_parameters()) {
    if (entry.value().grad().defined()) before[entry.key()] = entry.value().grad().clone();
  }
  EXPECT_EQ(before.size(), 4u);
  parallel.synchronize_gradients();
  for (const auto& entry : net->named_parameters()) {
    const at::Tensor grad = entry.value().grad();
    if (before.count(entry.key()) != 0) {
      ASSERT_TRUE(grad.defined()) << entry.key();
      EXPECT_TRUE(torch::equal(grad, before[entry.key()])) << entry.key();
    } else {
      EXPECT_FALSE(grad.defined()) << entry.key() << " (no rank used it)";
    }
  }
}

TEST(DataParallel, ChecksItsArguments) {
  TempDir dir;
  auto group = one_rank_group(dir);
  EXPECT_THROW_WITH(DataParallel(std::shared_ptr<torch::nn::Module>(), group), Error,
                    "DataParallel: module must not be null");
  EXPECT_THROW_WITH(DataParallel(torch::nn::Linear(nullptr), group), Error,
                    "DataParallel: module must not be null");
  EXPECT_THROW_WITH(DataParallel(torch::nn::Linear(2, 2), nullptr), Error,
                    "DataParallel: group must not be null");
  EXPECT_THROW_WITH(
      DataParallel(torch::nn::Linear(2, 2), group, DataParallelOptions().bucket_cap_mb(0)), Error,
      "DataParallel: bucket_cap_mb must be finite and > 0, got 0");
  EXPECT_THROW_WITH(
      DataParallel(torch::nn::Linear(2, 2), group,
                   DataParallelOptions().bucket_cap_mb(std::numeric_limits<double>::infinity())),
      Error, "DataParallel: bucket_cap_mb must be finite and > 0, got inf");
  DataParallel parallel(torch::nn::Linear(2, 2), group);
  EXPECT_THROW_WITH(parallel.broadcast_parameters(-1), Error,
                    "DataParallel::broadcast_parameters: root must be a rank in [0, 1), got -1");
  // A sparse gradient is refused before any collective.
  torch::nn::Embedding embedding(torch::nn::EmbeddingOptions(5, 2).sparse(true));
  DataParallel sparse(embedding, group);
  embedding->forward(torch::tensor({1, 3})).sum().backward();
  EXPECT_THROW_WITH(sparse.synchronize_gradients(), Error,
                    "DataParallel: parameter 'weight' has a sparse gradient");
}

}  // namespace
}  // namespace tth
