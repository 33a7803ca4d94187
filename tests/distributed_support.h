// Data-parallel tests: N ranks on 127.0.0.1, as processes of the test binary itself.
//
// A test starts its ranks with run_ranks("Scenario", ...): each rank re-runs this binary with
// the filter DistributedChild.DISABLED_Scenario and its rank in the environment, so a
// scenario is a disabled test beside the test that checks its results:
//
//   TEST(DistributedChild, DISABLED_Averages) {
//     if (!is_rank()) GTEST_SKIP();
//     auto group = join_group();   // a FileStore rendezvous in the test's directory
//     ...; rank_dir() is the test's directory, shared by the ranks
//   }
//   TEST(DataParallel, Averages) {
//     TempDir dir;
//     auto ranks = run_ranks("Averages", 2, dir.path());
//     expect_all_succeeded(ranks);
//   }
//
// Each rank's output goes to <dir>/rank<r>.log, kept in the result for the messages.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tth/process_group.h"

extern char** environ;

namespace tth::test {

/// How one rank ended.
struct RankResult {
  int exit_code = -1;  ///< -1 when killed by a signal (or by the timeout)
  int signal = 0;      ///< the signal that killed it, if one did
  std::string output;  ///< its stdout and stderr
};

/// Whether this process is a rank started by run_ranks.
inline bool is_rank() { return std::getenv("TTH_TEST_RANK") != nullptr; }
inline int env_int(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::atoi(value) : 0;
}
/// This rank's rank and the job's world size.
inline int test_rank() { return env_int("TTH_TEST_RANK"); }
inline int test_world_size() { return env_int("TTH_TEST_WORLD_SIZE"); }
/// The directory the test gave run_ranks, shared by its ranks.
inline std::filesystem::path rank_dir() { return std::getenv("TTH_TEST_DIR"); }
/// The rank's extra argument (run_ranks' `argument`), if any.
inline std::string rank_argument() {
  const char* value = std::getenv("TTH_TEST_ARGUMENT");
  return value != nullptr ? value : "";
}

/// Joins the job run_ranks started (a FileStore rendezvous; a short timeout so a test with a
/// dead rank ends quickly).
inline std::shared_ptr<ProcessGroup> join_group(
    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  return std::make_shared<ProcessGroup>(DistributedOptions(test_world_size(), test_rank())
                                            .init_file(std::getenv("TTH_TEST_STORE"))
                                            .timeout(timeout));
}

/// Runs scenario DistributedChild.DISABLED_<scenario> as `world_size` ranks, in parallel,
/// and waits for all of them (killing what is left after `timeout`). `argument` reaches every
/// rank as rank_argument(); `environment` adds NAME=VALUE entries.
inline std::vector<RankResult> run_ranks(const std::string& scenario, int world_size,
                                         const std::filesystem::path& dir,
                                         const std::string& argument = "",
                                         const std::vector<std::string>& environment = {},
                                         std::chrono::seconds timeout = std::chrono::seconds(120)) {
  static int job = 0;
  const std::string store =
      (dir / ("store." + std::to_string(::getpid()) + "." + std::to_string(job++))).string();
  std::filesystem::remove(store);
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world_size; ++rank) {
    std::vector<std::string> args = {self, "--gtest_also_run_disabled_tests",
                                     "--gtest_filter=DistributedChild.DISABLED_" + scenario};
    std::vector<std::string> env;
    for (char** entry = environ; *entry != nullptr; ++entry) env.emplace_back(*entry);
    env.push_back("TTH_TEST_RANK=" + std::to_string(rank));
    env.push_back("TTH_TEST_WORLD_SIZE=" + std::to_string(world_size));
    env.push_back("TTH_TEST_STORE=" + store);
    env.push_back("TTH_TEST_DIR=" + std::filesystem::absolute(dir).string());
    env.push_back("TTH_TEST_ARGUMENT=" + argument);
    env.insert(env.end(), environment.begin(), environment.end());
    std::vector<char*> argv, envp;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    for (auto& entry : env) envp.push_back(entry.data());
    envp.push_back(nullptr);
    const std::string log = (dir / ("rank" + std::to_string(rank) + ".log")).string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = 0;
    const int error = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
      ADD_FAILURE() << "posix_spawn " << self << ": " << error;
      pid = -1;
    }
    pids.push_back(pid);
  }
  std::vector<RankResult> results(world_size);
  std::vector<bool> done(world_size, false);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int left = world_size; left > 0;) {
    for (int rank = 0; rank < world_size; ++rank) {
      if (done[rank]) continue;
      int status = 0;
      if (pids[rank] < 0 || ::waitpid(pids[rank], &status, WNOHANG) == pids[rank]) {
        done[rank] = true;
        --left;
        if (pids[rank] >= 0 && WIFEXITED(status)) results[rank].exit_code = WEXITSTATUS(status);
        if (pids[rank] >= 0 && WIFSIGNALED(status)) results[rank].signal = WTERMSIG(status);
      }
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (int rank = 0; rank < world_size; ++rank) {
        if (done[rank]) continue;
        ADD_FAILURE() << "rank " << rank << " of scenario " << scenario << " timed out";
        ::kill(pids[rank], SIGKILL);
        ::waitpid(pids[rank], nullptr, 0);
        done[rank] = true;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int rank = 0; rank < world_size; ++rank) {
    std::ifstream in(dir / ("rank" + std::to_string(rank) + ".log"));
    std::stringstream text;
    text << in.rdbuf();
    results[rank].output = text.str();
  }
  return results;
}

/// Expects every rank to have passed its scenario (exit code 0 and no gtest failure).
inline void expect_all_succeeded(const std::vector<RankResult>& ranks) {
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    EXPECT_EQ(ranks[rank].exit_code, 0) << "rank " << rank << ":\n" << ranks[rank].output;
    EXPECT_NE(ranks[rank].output.find("[  PASSED  ] 1 test"), std::string::npos)
        << "rank " << rank << " ran no scenario:\n"
        << ranks[rank].output;
  }
}

}  // namespace tth::test
