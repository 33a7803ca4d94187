// Reports in a data-parallel job: LogReport, PrintReport, ProgressBar and PlotReport act on
// rank 0 only, and AverageAcrossRanks (tth/extensions/average_across_ranks.h) gives every rank
// the job's mean, on 2 ranks over 127.0.0.1.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "distributed_support.h"
#include "support.h"
#include "tth/extensions/average_across_ranks.h"
#include "tth/extensions/log_report.h"
#include "tth/extensions/plot_report.h"
#include "tth/extensions/print_report.h"
#include "tth/extensions/progress_bar.h"
#include "tth/savefun.h"
#include "tth/triggers/early_stopping_trigger.h"
#include "tth/triggers/interval_trigger.h"

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::join_group;
using test::run_ranks;
using test::TempDir;
using ::testing::HasSubstr;

// What PrintReport prints first: its header.
constexpr char kPrintHeader[] = "epoch       main/loss   only0";

// The entries of `directory` other than the run lock.
std::vector<std::string> files_in(const fs::path& directory) {
  std::vector<std::string> names;
  if (!fs::exists(directory)) return names;
  for (const auto& entry : fs::recursive_directory_iterator(directory)) {
    if (entry.path().filename() != "LOCK") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The value of `key` in the current observation, or NaN when absent.
double observed(const TorchTrainerHook& hook, const std::string& key) {
  auto found = hook.observation().find(key);
  return found == hook.observation().end() ? std::nan("") : found->second.value();
}

// The reports of one rank: every report extension, writing into `out`.
struct ReportSetup {
  std::shared_ptr<LogReport> log_report;
  std::vector<double> before;       // main/loss as a kWriter extension saw it
  std::vector<double> after;        // main/loss as a kReader extension saw it
  std::vector<double> only0_after;  // "only0" as the kReader extension saw it
  std::ostringstream progress;      // a second ProgressBar, into a string

  void extend(TorchTrainerHook& hook) {
    hook.extend(average_across_ranks({"main/loss", "only0"}));
    hook.extend(
        make_extension([this](TorchTrainerHook& h) { before.push_back(observed(h, "main/loss")); }),
        ExtendOptions().name("before").priority(priority::kWriter));
    hook.extend(make_extension([this](TorchTrainerHook& h) {
                  after.push_back(observed(h, "main/loss"));
                  only0_after.push_back(observed(h, "only0"));
                }),
                ExtendOptions().name("after"));
    log_report = std::make_shared<LogReport>();
    hook.extend(log_report);
    hook.extend(
        std::make_shared<PrintReport>(std::vector<std::string>{"epoch", "main/loss", "only0"}));
    hook.extend(std::make_shared<ProgressBar>(
        ProgressBarOptions().update_interval(1).mode(ProgressMode::kPlain)));
    hook.extend(std::make_shared<ProgressBar>(
        ProgressBarOptions().update_interval(1).mode(ProgressMode::kPlain).out(&progress)));
    hook.extend(std::make_shared<PlotReport>(std::vector<std::string>{"main/loss"},
                                             PlotReportOptions().filename("plots/loss.png")));
  }
};

// Rank r reports main/loss = r + 1; rank 0 alone reports only0 = 7.
void train(TorchTrainerHook& hook, int rank) {
  while (!hook.done()) {
    hook.run_iteration([&] {
      report("main/loss", static_cast<double>(rank + 1));
      if (rank == 0) report("only0", 7.0);
    });
  }
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(DistributedChild, DISABLED_ReportsOnRankZero) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  const fs::path out = test::rank_dir() / ("rank" + std::to_string(rank));
  ReportSetup setup;
  {
    TorchTrainerHook hook(
        HookOptions(2).process_group(group).out(out.string()).stop_trigger({4, iteration}));
    setup.extend(hook);
    train(hook, rank);
    EXPECT_EQ(hook.iteration(), 4);

    // A kWriter extension runs before the average, a kReader one after it, on both ranks.
    EXPECT_EQ(setup.before, std::vector<double>(4, rank + 1.0));
    EXPECT_EQ(setup.after, std::vector<double>(4, 1.5));
    EXPECT_EQ(setup.only0_after, std::vector<double>(4, 7.0)) << "the mean of the ranks that "
                                                                 "reported it, on every rank";

    // Every rank saves its state, and each loads the other's below.
    const fs::path saved = test::rank_dir() / ("state" + std::to_string(rank));
    std::ofstream(saved).close();
    torch_savefun()(saved.string(), hook.state_dict());
  }
  std::cout << "rank " << rank << " trained" << std::endl;

  if (rank == 0) {
    ASSERT_EQ(setup.log_report->log().size(), 2u);
    for (const auto& row : setup.log_report->log()) {
      EXPECT_EQ(row.at("main/loss"), 1.5);
      EXPECT_EQ(row.at("only0"), 7.0);
    }
    const nlohmann::json log = read_json(out / "log");
    ASSERT_EQ(log.size(), 2u);
    EXPECT_EQ(log[1]["main/loss"].get<double>(), 1.5);
    EXPECT_EQ(log[1]["iteration"].get<int>(), 4);
    EXPECT_TRUE(fs::exists(out / "plots" / "loss.png"));
    EXPECT_THAT(setup.progress.str(), HasSubstr("iteration 4/4"));
  } else {
    EXPECT_TRUE(setup.log_report->log().empty());
    EXPECT_EQ(files_in(out), std::vector<std::string>{}) << "rank 1 writes no report file";
    EXPECT_EQ(setup.progress.str(), "");
  }

  // Each rank loads the other rank's state, strictly (the structures match), and trains on.
  group->barrier();
  const int other = 1 - rank;
  StateDict state =
      torch_loadfun()((test::rank_dir() / ("state" + std::to_string(other))).string());
  const fs::path resumed = test::rank_dir() / ("resumed" + std::to_string(rank));
  ReportSetup again;
  TorchTrainerHook hook(
      HookOptions(2).process_group(group).out(resumed.string()).stop_trigger({6, iteration}));
  again.extend(hook);
  ASSERT_NO_THROW(hook.load_state_dict(state, /*strict=*/true));
  EXPECT_EQ(hook.iteration(), 4);
  if (rank == 1) {
    EXPECT_EQ(again.log_report->log().size(), 2u) << "rank 0's rows were loaded";
  } else {
    EXPECT_TRUE(again.log_report->log().empty()) << "rank 1 had no rows";
  }
  train(hook, rank);
  EXPECT_EQ(hook.iteration(), 6);
  EXPECT_EQ(again.after, std::vector<double>(2, 1.5));
  if (rank == 0) {
    EXPECT_TRUE(fs::exists(resumed / "log"));
    EXPECT_TRUE(fs::exists(resumed / "plots" / "loss.png"));
  } else {
    EXPECT_EQ(files_in(resumed), std::vector<std::string>{})
        << "rank 1 writes nothing even with rank 0's state loaded";
    EXPECT_EQ(again.progress.str(), "");
  }
}

TEST(DistributedReport, ReportsActOnRankZeroOnlyAndSeeTheMean) {
  TempDir dir;
  const auto ranks = run_ranks("ReportsOnRankZero", 2, dir.path());
  test::expect_all_succeeded(ranks);
  // PrintReport and ProgressBar print to standard output on rank 0 only.
  EXPECT_THAT(ranks[0].output, HasSubstr(kPrintHeader));
  EXPECT_THAT(ranks[0].output, HasSubstr("1           1.5         7"));
  EXPECT_THAT(ranks[0].output, HasSubstr("iteration 4/4 (100.0%)"));
  EXPECT_THAT(ranks[1].output, HasSubstr("rank 1 trained"));
  EXPECT_THAT(ranks[1].output, ::testing::Not(HasSubstr("main/loss")));
  EXPECT_THAT(ranks[1].output, ::testing::Not(HasSubstr("iters/sec")));
}

// Per-rank values for an EarlyStoppingTrigger with patience 3, checked every iteration: alone,
// rank 0 would stop at iteration 5 and rank 1 at 11; their mean stops at 7.
double early_stopping_value(int rank, int64_t iteration) {
  static const std::vector<double> values[] = {
      {10, 9, 9, 9, 12},
      {10, 9, 8, 7, 6, 5, 4.5, 4.4},
  };
  const auto& mine = values[rank];
  return mine[std::min<std::size_t>(static_cast<std::size_t>(iteration - 1), mine.size() - 1)];
}

int64_t train_until_early_stop(const HookOptions& options, int rank, bool average) {
  TorchTrainerHook hook(HookOptions(options).stop_trigger(
      TriggerRef(std::make_shared<EarlyStoppingTrigger>(EarlyStoppingOptions()
                                                            .monitor("main/loss")
                                                            .patience(3)
                                                            .mode(Mode::kMin)
                                                            .check({1, iteration})
                                                            .max_trigger({20, iteration})))));
  if (average) hook.extend(average_across_ranks({"main/loss"}));
  while (!hook.done()) {
    hook.run_iteration(
        [&] { report("main/loss", early_stopping_value(rank, hook.iteration() + 1)); });
  }
  return hook.iteration();
}

TEST(DistributedChild, DISABLED_ReportEarlyStopping) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  const fs::path dir = test::rank_dir();
  // Without averaging (no process group) each rank would stop on its own values.
  EXPECT_EQ(train_until_early_stop(
                HookOptions(1).out((dir / ("alone" + std::to_string(rank))).string()), rank, false),
            rank == 0 ? 5 : 11);
  EXPECT_EQ(train_until_early_stop(HookOptions(1).process_group(group).out(
                                       (dir / ("job" + std::to_string(rank))).string()),
                                   rank, true),
            7);
}

TEST(DistributedReport, EarlyStoppingOnTheAveragedKeyStopsEveryRankAtOnce) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("ReportEarlyStopping", 2, dir.path()));
}

TEST(DistributedChild, DISABLED_ReportBadValue) {
  if (!test::is_rank()) GTEST_SKIP();
  auto group = join_group();
  const int rank = group->rank();
  TorchTrainerHook hook(HookOptions(1).process_group(group).out(
      (test::rank_dir() / ("rank" + std::to_string(rank))).string()));
  hook.extend(average_across_ranks({"main/loss"}));
  const auto step = [&] {
    // A complex number has no double value: rank 0's key cannot be averaged.
    if (rank == 0) {
      report("main/loss", torch::tensor({c10::complex<double>(1, 2)}));
    } else {
      report("main/loss", 2.0);
    }
  };
  EXPECT_THAT(
      [&] { hook.run_iteration(step); },
      ::testing::ThrowsMessage<Error>(HasSubstr(
          rank == 0 ? "AverageAcrossRanks: key 'main/loss' is not a numeric scalar on rank 0"
                    : "AverageAcrossRanks: key 'main/loss' is not a numeric scalar on another "
                      "rank")));
  // The ranks are still in step: a further collective completes.
  EXPECT_TRUE(group->all_true(true));
}

TEST(DistributedReport, AValueThatIsNotANumberFailsEveryRankWithoutADeadlock) {
  TempDir dir;
  test::expect_all_succeeded(run_ranks("ReportBadValue", 2, dir.path()));
}

// ---- One process ----

TEST(AverageAcrossRanks, WithoutAProcessGroupLeavesValuesUnchanged) {
  TempDir dir;
  std::vector<double> seen;
  std::vector<bool> absent;
  TorchTrainerHook hook(HookOptions(1).out(dir / "out").stop_trigger({2, iteration}));
  hook.extend(average_across_ranks({"main/loss", "missing"}));
  hook.extend(make_extension([&](TorchTrainerHook& h) {
    seen.push_back(observed(h, "main/loss"));
    absent.push_back(h.observation().count("missing") == 0);
  }));
  while (!hook.done()) hook.run_iteration([&] { report("main/loss", 3.25 * hook.iteration()); });
  EXPECT_EQ(seen, (std::vector<double>{0, 3.25}));
  EXPECT_EQ(absent, (std::vector<bool>{true, true}));
}

TEST(AverageAcrossRanks, OneRankGroupLeavesValuesUnchanged) {
  TempDir dir;
  auto group = std::make_shared<ProcessGroup>(DistributedOptions(1, 0).init_file(dir / "store"));
  std::vector<double> seen;
  TorchTrainerHook hook(
      HookOptions(1).process_group(group).out(dir / "out").stop_trigger({1, iteration}));
  hook.extend(average_across_ranks({"main/loss"}));
  hook.extend(
      make_extension([&](TorchTrainerHook& h) { seen.push_back(observed(h, "main/loss")); }));
  while (!hook.done()) hook.run_iteration([&] { report("main/loss", 0.125); });
  EXPECT_EQ(seen, std::vector<double>{0.125});
}

TEST(AverageAcrossRanks, BadKeysNameTheArgument) {
  EXPECT_THAT([] { average_across_ranks({}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("AverageAcrossRanks: keys must name")));
  EXPECT_THAT(
      [] {
        average_across_ranks({"main/loss", ""});
      },
      ::testing::ThrowsMessage<Error>(
          HasSubstr("AverageAcrossRanks: keys must not contain an empty key")));
  EXPECT_THAT(
      [] {
        average_across_ranks({"a", "b", "a"});
      },
      ::testing::ThrowsMessage<Error>(
          HasSubstr("AverageAcrossRanks: keys must not repeat a key, got 'a' twice")));
}

TEST(AverageAcrossRanks, RunsAfterWritersAndBeforeReaders) {
  auto average = average_across_ranks({"main/loss"});
  EXPECT_EQ(average->default_priority(), priority::kEditor);
  EXPECT_EQ(average->default_name(), "AverageAcrossRanks");
  EXPECT_EQ(average->keys(), (std::vector<std::string>{"main/loss"}));
  TempDir dir;
  TorchTrainerHook hook(HookOptions(1).out(dir / "out"));
  hook.extend(std::make_shared<LogReport>());
  hook.extend(average);
  hook.extend(make_extension([](TorchTrainerHook&) {},
                             ExtensionOptions().name("writer").priority(priority::kWriter)));
  EXPECT_EQ(hook.extension_names(),
            (std::vector<std::string>{"writer", "AverageAcrossRanks", "LogReport"}));
  // Called every iteration by default.
  const auto* interval =
      dynamic_cast<const IntervalTrigger*>(average->default_trigger().get().get());
  ASSERT_NE(interval, nullptr);
  EXPECT_EQ(interval->period(), 1);
  EXPECT_EQ(interval->unit(), Unit::kIteration);
}

}  // namespace
}  // namespace tth
