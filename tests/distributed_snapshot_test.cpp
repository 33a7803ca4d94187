// Snapshots in a data-parallel job (tth/snapshot.h, "Data-parallel jobs"): 2 ranks on
// 127.0.0.1, as processes of this binary (distributed_support.h).
#include <signal.h>
#include <unistd.h>

#include <map>
#include <sstream>

#include "distributed_support.h"
#include "support.h"

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::join_group;
using test::rank_argument;
using test::rank_dir;
using test::run_ranks;
using test::TempDir;
using ::testing::HasSubstr;

// The scenario's settings: "key=value,key=value" (run_ranks' argument).
std::map<std::string, std::string> settings() {
  std::map<std::string, std::string> result;
  std::stringstream text(rank_argument());
  for (std::string item; std::getline(text, item, ',');) {
    const auto equals = item.find('=');
    result[item.substr(0, equals)] = item.substr(equals + 1);
  }
  return result;
}

int setting(const std::map<std::string, std::string>& all, const std::string& key, int fallback) {
  const auto found = all.find(key);
  return found == all.end() ? fallback : std::stoi(found->second);
}

// A data-parallel run: each rank trains a small model on its own data (random inputs from its
// own generator, seeded by rank, so that per-rank state matters), gradients averaged by hand
// over the group, with a snapshot every 2 iterations and autoload. At the end each rank saves
// its parameters to <dir>/final_rank<r>.pt and its generator's next draw.
//
// Settings: iterations (stop), sharded (0/1), fixed (1: the data does not come from the
// generator), die_at (rank `die_rank` tears its snapshot of
// that iteration, then dies), n_retains, error_at (every rank throws in that iteration),
// single (1: join no group: a single process), out (directory name under the test's),
// own_cwd (1: each rank works in a directory of its own, with a relative out), extra (1: rank 1
// registers one more extension), signal_at (rank 1 alone gets SIGUSR1 in that iteration; every
// rank registers save_on_signal), cond (rank 0's condition: iteration 4 only), elapsed (1: the
// template is "snapshot_{elapsed_time:.6f}", a field that differs between the ranks).
TEST(DistributedChild, DISABLED_Train) {
  if (!test::is_rank()) GTEST_SKIP();
  const auto config = settings();
  const bool single = setting(config, "single", 0) == 1;
  std::shared_ptr<ProcessGroup> group = single ? nullptr : join_group(std::chrono::seconds(20));
  const int rank = group ? group->rank() : 0;
  const int die_at = setting(config, "die_at", -1);
  const int die_rank = setting(config, "die_rank", 1);
  const int error_at = setting(config, "error_at", -1);
  const fs::path dir = rank_dir();
  std::string out = (dir / (config.count("out") ? config.at("out") : "out")).string();
  if (setting(config, "own_cwd", 0) == 1) {
    // Each rank in a directory of its own, with a relative out: as machines that share none.
    const fs::path cwd = dir / ("cwd" + std::to_string(rank));
    fs::create_directories(cwd);
    fs::current_path(cwd);
    out = "out";
  }

  torch::manual_seed(100 + rank);  // a different start on each rank: the snapshot must fix it
  torch::nn::Linear model(4, 2);
  {
    // Every rank starts from rank 0's parameters, as DataParallel would.
    std::vector<at::Tensor> parameters = model->parameters();
    torch::NoGradGuard no_grad;
    if (group) group->broadcast(parameters, 0);
  }
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(),
                                                       torch::optim::SGDOptions(0.1).momentum(0.9));
  TorchTrainerHook hook(HookOptions(4).out(out).process_group(group).stop_trigger(
      {static_cast<double>(setting(config, "iterations", 6)), iteration}));
  hook.add_model("main", model.ptr());
  hook.add_optimizer("main", optimizer);
  const std::string writes = (dir / ("writes_rank" + std::to_string(rank) + ".txt")).string();
  SaveFunction savefun = [&, base = torch_savefun()](const std::string& path,
                                                     const StateDict& state) {
    std::ofstream(writes, std::ios::app) << hook.iteration() << "\n";
    base(path, state);
    if (hook.iteration() == die_at && rank == die_rank) {
      fs::resize_file(path, fs::file_size(path) / 2);  // torn mid-write
      std::_Exit(9);
    }
  };
  SnapshotOptions options;
  if (setting(config, "cond", 0) == 1) {
    // Rank 0's condition decides; rank 1's (which would never save) is not even asked.
    options.condition([rank](const TorchTrainerHook& h) {
      if (rank != 0) throw std::runtime_error("rank 1's condition was evaluated");
      return h.iteration() == 4;
    });
  }
  if (setting(config, "elapsed", 0) == 1) options.filename("snapshot_{elapsed_time:.6f}");
  hook.extend(snapshot(options.savefun(savefun)
                           .autoload(true)
                           .sharded(setting(config, "sharded", 0) == 1)
                           .n_retains(setting(config, "n_retains", -1))
                           .snapshot_on_error(error_at >= 0)),
              ExtendOptions().trigger({2, iteration}));
  const int signal_at = setting(config, "signal_at", -1);
  if (signal_at >= 0) hook.extend(save_on_signal());
  if (setting(config, "extra", 0) == 1 && rank == 1) {
    hook.extend(make_extension([](TorchTrainerHook&) {}), ExtendOptions().name("extra"));
  }
  while (!hook.done()) {
    hook.run_iteration([&] {
      if (static_cast<int>(hook.iteration()) + 1 == error_at) throw std::runtime_error("boom");
      if (static_cast<int>(hook.iteration()) + 1 == signal_at && rank == 1) ::raise(SIGUSR1);
      // This rank's generator, or (fixed) data that depends on the rank and iteration only.
      const at::Tensor x = setting(config, "fixed", 0) == 1
                               ? torch::sin(torch::arange(32, torch::kFloat).view({8, 4}) *
                                                static_cast<double>(hook.iteration() + 1) +
                                            rank)
                               : torch::rand({8, 4});
      const at::Tensor loss = model(x).pow(2).mean();
      optimizer->zero_grad();
      loss.backward();
      if (group) {
        std::vector<at::Tensor> grads;
        for (const auto& p : model->parameters()) grads.push_back(p.grad());
        group->all_reduce_sum(grads);
        for (auto& grad : grads) grad.div_(group->world_size());
      }
      optimizer->step();
    });
  }
  std::vector<at::Tensor> result = model->parameters();
  result.push_back(torch::rand({3}));  // where this rank's generator stands
  torch::save(result, (dir / ("final_rank" + std::to_string(rank) + ".pt")).string());
}

std::vector<at::Tensor> final_of(const fs::path& dir, int rank) {
  std::vector<at::Tensor> tensors;
  torch::load(tensors, (dir / ("final_rank" + std::to_string(rank) + ".pt")).string());
  return tensors;
}

// Whether two runs ended with the same parameters and generators, bit for bit.
void expect_same_final(const fs::path& a, const fs::path& b, int rank) {
  const auto first = final_of(a, rank), second = final_of(b, rank);
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_TRUE(torch::equal(first[i], second[i])) << "rank " << rank << " tensor " << i;
  }
}

int write_count(const fs::path& dir, int rank) {
  std::ifstream in(dir / ("writes_rank" + std::to_string(rank) + ".txt"));
  int count = 0;
  for (std::string line; std::getline(in, line);) ++count;
  return count;
}

TEST(DistributedSnapshot, SaverRankWritesOneFileThatEveryRankResumesFrom) {
  TempDir uninterrupted, interrupted;
  // Every rank resumes with the saver's generator: the data must not come from it for the
  // resumed run to equal the uninterrupted one.
  test::expect_all_succeeded(run_ranks("Train", 2, uninterrupted.path(), "iterations=10,fixed=1"));
  test::expect_all_succeeded(run_ranks("Train", 2, interrupted.path(), "iterations=6,fixed=1"));
  const fs::path out = interrupted.path() / "out";
  EXPECT_THAT(
      test::files_in(out.string()),
      ::testing::UnorderedElementsAre("snapshot_iter_2", "snapshot_iter_4", "snapshot_iter_6"));
  EXPECT_EQ(write_count(interrupted.path(), 0), 3);
  EXPECT_EQ(write_count(interrupted.path(), 1), 0) << "only the saver rank writes";
  const StateDict metadata = read_snapshot_metadata((out / "snapshot_iter_6").string());
  EXPECT_EQ(metadata.get_int(kWorldSizeKey), 2);

  const auto resumed = run_ranks("Train", 2, interrupted.path(), "iterations=10,fixed=1");
  test::expect_all_succeeded(resumed);
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_THAT(resumed[rank].output, HasSubstr("resumed from '"));
    EXPECT_THAT(resumed[rank].output, HasSubstr("snapshot_iter_6' (iteration 6)"));
  }
  // Every rank took the saver's state: equal parameters, as the uninterrupted run's.
  const auto rank0 = final_of(interrupted.path(), 0), rank1 = final_of(interrupted.path(), 1);
  for (size_t i = 0; i + 1 < rank0.size(); ++i) {
    EXPECT_TRUE(torch::equal(rank0[i], rank1[i])) << "parameter " << i;
    EXPECT_TRUE(torch::equal(rank0[i], final_of(uninterrupted.path(), 0)[i])) << i;
  }
}

TEST(DistributedSnapshot, ShardedResumeEqualsTheUninterruptedRunOnEveryRank) {
  TempDir uninterrupted, interrupted;
  test::expect_all_succeeded(
      run_ranks("Train", 2, uninterrupted.path(), "iterations=10,sharded=1"));
  test::expect_all_succeeded(run_ranks("Train", 2, interrupted.path(), "iterations=6,sharded=1"));
  const fs::path out = interrupted.path() / "out";
  EXPECT_THAT(
      test::files_in(out.string()),
      ::testing::UnorderedElementsAre(
          "snapshot_iter_2", "snapshot_iter_2.shard-0-of-2", "snapshot_iter_2.shard-1-of-2",
          "snapshot_iter_4", "snapshot_iter_4.shard-0-of-2", "snapshot_iter_4.shard-1-of-2",
          "snapshot_iter_6", "snapshot_iter_6.shard-0-of-2", "snapshot_iter_6.shard-1-of-2"));
  EXPECT_EQ(write_count(interrupted.path(), 0), 6) << "its parts and the manifests";
  EXPECT_EQ(write_count(interrupted.path(), 1), 3) << "its parts";
  const StateDict part = read_snapshot((out / "snapshot_iter_6.shard-1-of-2").string());
  EXPECT_EQ(part.get_int(kRankKey), 1);

  test::expect_all_succeeded(run_ranks("Train", 2, interrupted.path(), "iterations=10,sharded=1"));
  // Each rank continued from its own part: even its generator is where it would have been.
  expect_same_final(uninterrupted.path(), interrupted.path(), 0);
  expect_same_final(uninterrupted.path(), interrupted.path(), 1);
}

TEST(DistributedSnapshot, ARankDyingMidSnapshotLeavesNoManifestAndTheJobResumesFromThePrevious) {
  TempDir uninterrupted, interrupted;
  test::expect_all_succeeded(run_ranks("Train", 2, uninterrupted.path(), "iterations=6,sharded=1"));
  const auto killed = run_ranks("Train", 2, interrupted.path(), "iterations=6,sharded=1,die_at=4");
  EXPECT_EQ(killed[1].exit_code, 9);
  EXPECT_NE(killed[0].exit_code, 0);
  EXPECT_THAT(killed[0].output, HasSubstr("another rank died"));
  EXPECT_THAT(killed[0].output, HasSubstr("failed on rank 0 of 2"));
  const fs::path out = interrupted.path() / "out";
  EXPECT_TRUE(fs::exists(out / "snapshot_iter_2"));
  EXPECT_FALSE(fs::exists(out / "snapshot_iter_4")) << "no manifest for the torn step";
  EXPECT_FALSE(fs::exists(out / "snapshot_iter_4.shard-1-of-2")) << "its part is a temp file";

  const auto resumed = run_ranks("Train", 2, interrupted.path(), "iterations=6,sharded=1");
  test::expect_all_succeeded(resumed);
  EXPECT_THAT(resumed[0].output, HasSubstr("snapshot_iter_2.shard-0-of-2' (iteration 2)"));
  EXPECT_THAT(resumed[1].output, HasSubstr("snapshot_iter_2.shard-1-of-2' (iteration 2)"));
  EXPECT_THAT(resumed[0].output, HasSubstr("left by an interrupted write"));
  expect_same_final(uninterrupted.path(), interrupted.path(), 0);
  expect_same_final(uninterrupted.path(), interrupted.path(), 1);
}

TEST(DistributedSnapshot, TheSaverDyingMidWriteLeavesThePreviousSnapshot) {
  TempDir dir;
  const auto killed = run_ranks("Train", 2, dir.path(), "iterations=6,die_at=4,die_rank=0");
  EXPECT_EQ(killed[0].exit_code, 9);
  EXPECT_NE(killed[1].exit_code, 0);
  EXPECT_THAT(killed[1].output, HasSubstr("failed on rank 1 of 2"));
  EXPECT_THAT(test::files_in((dir.path() / "out").string()),
              ::testing::Contains(::testing::StartsWith(".snapshot_iter_4.tmp.")));
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "snapshot_iter_4"));
  const auto resumed = run_ranks("Train", 2, dir.path(), "iterations=6");
  test::expect_all_succeeded(resumed);
  EXPECT_THAT(resumed[1].output, HasSubstr("snapshot_iter_2' (iteration 2)"));
}

TEST(DistributedSnapshot, ADamagedPartMakesEveryRankFallBackTogether) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Train", 2, dir.path(), "iterations=4,sharded=1"));
  const fs::path part = dir.path() / "out" / "snapshot_iter_4.shard-1-of-2";
  fs::resize_file(part, fs::file_size(part) - 10);
  const auto resumed = run_ranks("Train", 2, dir.path(), "iterations=4,sharded=1");
  test::expect_all_succeeded(resumed);
  EXPECT_THAT(resumed[0].output, HasSubstr("autoload skips"));
  EXPECT_THAT(resumed[0].output, HasSubstr("snapshot_iter_2.shard-0-of-2' (iteration 2)"));
  EXPECT_THAT(resumed[1].output, HasSubstr("snapshot_iter_2.shard-1-of-2' (iteration 2)"));
}

TEST(DistributedSnapshot, RetentionDeletesOldManifestsAndTheirParts) {
  TempDir dir;
  // Parts whose job died before the manifest: an older step's go, a later step's stay.
  fs::create_directories(dir.path() / "out");
  test::write_file((dir.path() / "out" / "snapshot_iter_1.shard-1-of-2").string(),
                   test::Bytes{1, 2, 3});
  test::write_file((dir.path() / "out" / "snapshot_iter_99.shard-1-of-2").string(),
                   test::Bytes{1, 2, 3});
  test::expect_all_succeeded(
      run_ranks("Train", 2, dir.path(), "iterations=8,sharded=1,n_retains=2"));
  EXPECT_THAT(test::files_in((dir.path() / "out").string()),
              ::testing::UnorderedElementsAre(
                  "snapshot_iter_6", "snapshot_iter_6.shard-0-of-2", "snapshot_iter_6.shard-1-of-2",
                  "snapshot_iter_8", "snapshot_iter_8.shard-0-of-2", "snapshot_iter_8.shard-1-of-2",
                  "snapshot_iter_99.shard-1-of-2"));
}

TEST(DistributedSnapshot, AnotherWorldSizeOnResumeIsAClearError) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Train", 2, dir.path(), "iterations=2"));
  const auto one = run_ranks("Train", 1, dir.path(), "iterations=4");
  EXPECT_NE(one[0].exit_code, 0);
  EXPECT_THAT(
      one[0].output,
      HasSubstr("'" + (dir.path() / "out" / "snapshot_iter_2").string() +
                "' was saved by a job of 2 ranks, and this job has 1: resume with 2 ranks"));
  const auto single = run_ranks("Train", 1, dir.path(), "iterations=4,single=1");
  EXPECT_NE(single[0].exit_code, 0);
  EXPECT_THAT(single[0].output, HasSubstr("was saved by a data-parallel job of 2 ranks"));
  EXPECT_THAT(test::files_in((dir.path() / "out").string()),
              ::testing::UnorderedElementsAre("snapshot_iter_2"))
      << "a run that could not resume saves nothing on error";

  // Sharded: the parts of a 2-rank job are not merely missing for 1 rank: an error too.
  TempDir sharded;
  test::expect_all_succeeded(run_ranks("Train", 2, sharded.path(), "iterations=2,sharded=1"));
  const auto fewer = run_ranks("Train", 1, sharded.path(), "iterations=4,sharded=1");
  EXPECT_NE(fewer[0].exit_code, 0);
  EXPECT_THAT(fewer[0].output, HasSubstr("was saved by a job of 2 ranks, and this job has 1"));
  const auto more = run_ranks("Train", 3, sharded.path(), "iterations=4,sharded=1");
  for (const auto& rank : more) {
    EXPECT_NE(rank.exit_code, 0);
    EXPECT_THAT(rank.output, HasSubstr("was saved by a job of 2 ranks, and this job has 3"));
  }
}

TEST(DistributedSnapshot, ASaverFileThatOtherRanksCannotFindIsAnErrorNotAFreshStart) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Train", 2, dir.path(), "iterations=2,own_cwd=1"));
  const auto resumed = run_ranks("Train", 2, dir.path(), "iterations=4,own_cwd=1");
  for (const auto& rank : resumed) {
    EXPECT_NE(rank.exit_code, 0);
    EXPECT_THAT(rank.output, HasSubstr("rank(s) 1 cannot find 'out/snapshot_iter_2', which the "
                                       "saver rank 0 reads"));
  }
}

TEST(DistributedSnapshot, RanksWithOtherExtensionsFailTogetherAtStart) {
  TempDir dir;
  const auto ranks = run_ranks("Train", 2, dir.path(), "iterations=2,extra=1");
  for (const auto& rank : ranks) {
    EXPECT_NE(rank.exit_code, 0);
    EXPECT_THAT(rank.output, HasSubstr("the ranks registered different extensions: rank 0 has "
                                       "['snapshot' (priority -100)], rank(s) 1 have others"));
  }
  EXPECT_THAT(ranks[1].output, HasSubstr("(rank 1 has ['extra' (priority 100), 'snapshot'"));
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "snapshot_iter_0"));
}

TEST(DistributedSnapshot, ASignalToOneRankMakesEveryRankSaveAndStopTogether) {
  TempDir dir;
  const auto ranks = run_ranks("Train", 2, dir.path(), "iterations=10,signal_at=3,sharded=1");
  test::expect_all_succeeded(ranks);
  EXPECT_THAT(ranks[1].output, HasSubstr("SIGUSR1 received; saved '"));
  EXPECT_THAT(ranks[0].output, HasSubstr("a signal to another rank was received; saved '"));
  EXPECT_THAT(test::files_in((dir.path() / "out").string()),
              ::testing::IsSupersetOf({"snapshot_iter_3", "snapshot_iter_3.shard-0-of-2",
                                       "snapshot_iter_3.shard-1-of-2"}));
  EXPECT_FALSE(fs::exists(dir.path() / "out" / "snapshot_iter_4")) << "both stopped at 3";
}

TEST(DistributedSnapshot, RankZerosConditionDecidesForEveryRank) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Train", 2, dir.path(), "iterations=8,sharded=1,cond=1"));
  EXPECT_THAT(test::files_in((dir.path() / "out").string()),
              ::testing::UnorderedElementsAre("snapshot_iter_4", "snapshot_iter_4.shard-0-of-2",
                                              "snapshot_iter_4.shard-1-of-2"));
}

TEST(DistributedSnapshot, EveryRanksPartIsNamedAsTheSaversManifest) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Train", 2, dir.path(), "iterations=4,sharded=1,elapsed=1"));
  const auto files = test::files_in((dir.path() / "out").string());
  ASSERT_EQ(files.size(), 6u) << ::testing::PrintToString(files);
  for (const std::string& name : files) {
    const auto part = name.find(".shard-");
    if (part == std::string::npos) continue;
    EXPECT_THAT(files, ::testing::Contains(name.substr(0, part))) << name << " has no manifest";
  }
}

TEST(DistributedSnapshot, APartMissingUnderItsManifestIsAnErrorNotAFreshStart) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("Train", 2, dir.path(), "iterations=4,sharded=1"));
  fs::remove(dir.path() / "out" / "snapshot_iter_4.shard-1-of-2");
  const auto resumed = run_ranks("Train", 2, dir.path(), "iterations=6,sharded=1");
  for (const auto& rank : resumed) {
    EXPECT_NE(rank.exit_code, 0);
    EXPECT_THAT(rank.output, HasSubstr("rank(s) 1 cannot find their part of '"));
  }
  EXPECT_TRUE(fs::exists(dir.path() / "out" / "snapshot_iter_2")) << "nothing was deleted";
}

TEST(DistributedSnapshot, OnlyASnapshotThatIsShardedTakesAnotherSaverRank) {
  EXPECT_THAT([] { snapshot(SnapshotOptions().saver_rank(1)); },
              ::testing::ThrowsMessage<Error>(
                  HasSubstr("SnapshotOptions: saver_rank must be 0 unless sharded")));
  EXPECT_THAT([] { snapshot(SnapshotOptions().sharded(true).saver_rank(-1)); },
              ::testing::ThrowsMessage<Error>(HasSubstr("saver_rank must be >= 0, got -1")));
  EXPECT_NO_THROW(snapshot(SnapshotOptions().sharded(true).saver_rank(1)));
}

// Rank 1 registers its snapshot with other settings than rank 0's.
TEST(DistributedChild, DISABLED_MismatchedSettings) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  TorchTrainerHook hook(HookOptions(4).out((rank_dir() / "out").string()).process_group(group));
  hook.extend(snapshot(SnapshotOptions().n_retains(group->rank() == 0 ? 3 : 2)));
  try {
    hook.start();
    FAIL() << "started with mismatched settings";
  } catch (const DistributedError& error) {
    EXPECT_THAT(error.what(), HasSubstr("the ranks' settings differ: rank 0 has (filename "
                                        "'snapshot_iter_{iteration}', saver rank, saver_rank 0, "
                                        "n_retains 3, keep_best none, autoload false), rank(s) 1"));
    if (group->rank() == 1) EXPECT_THAT(error.what(), HasSubstr("rank 1 has filename"));
  }
}

TEST(DistributedSnapshot, MismatchedSettingsAcrossRanksAreReportedOnEveryRank) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("MismatchedSettings", 2, dir.path()));
}

TEST(DistributedSnapshot, OnErrorOnlyTheSaverRankWrites) {
  TempDir dir;
  const auto failed = run_ranks("Train", 2, dir.path(), "iterations=6,error_at=3");
  for (const auto& rank : failed) {
    EXPECT_NE(rank.exit_code, 0);
    EXPECT_THAT(rank.output, HasSubstr("boom"));
  }
  EXPECT_EQ(write_count(dir.path(), 0), 2) << "iteration 2, then the error snapshot";
  EXPECT_EQ(write_count(dir.path(), 1), 0) << "no rank but the saver writes the shared file";
  const auto sharded =
      run_ranks("Train", 2, dir.path(), "iterations=6,error_at=3,sharded=1,out=sharded");
  EXPECT_THAT(sharded[0].output, HasSubstr("snapshot_on_error saves nothing"));
  EXPECT_TRUE(fs::exists(dir.path() / "sharded" / "snapshot_iter_2"));
  EXPECT_EQ(write_count(dir.path(), 0), 2 + 2) << "iteration 2's part and manifest only";
  EXPECT_EQ(write_count(dir.path(), 1), 1) << "iteration 2's part only";
}

}  // namespace
}  // namespace tth
