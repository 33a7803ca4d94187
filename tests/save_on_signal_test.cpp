// save_on_signal: real signals, raised in this process at a chosen point of an iteration, and
// sent with kill(2) to a training child process (snapshot_child signal).
#include "tth/save_on_signal.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <regex>

#include "support.h"
#include "test_programs.h"

extern char** environ;

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::CapturedWarnings;
using test::files_in;
using test::Recorder;
using test::run_command;
using test::shell_quote;
using test::TempDir;
using test::Training;

// ---- helpers ----

struct sigaction current_action(int signal_number) {
  struct sigaction action {};
  ::sigaction(signal_number, nullptr, &action);
  return action;
}

// Puts a signal's disposition back when the test ends, whatever the test did to it.
class KeepDisposition {
 public:
  explicit KeepDisposition(int signal_number)
      : signal_(signal_number), saved_(current_action(signal_number)) {}
  ~KeepDisposition() { ::sigaction(signal_, &saved_, nullptr); }

 private:
  int signal_;
  struct sigaction saved_;
};

// A savefun that logs "save@<iteration>" before it writes, for call-order checks.
SaveFunction logging_savefun(std::vector<std::string>* log) {
  return [log](const std::string& temp, const StateDict& state) {
    log->push_back("save@" + std::to_string(state.get_int(kIterationKey)));
    torch_savefun()(temp, state);
  };
}

// Runs empty iterations until done(), raising `signal_number` inside the step of iteration
// `raise_at` (1-based). Bounded, so that a missed signal fails instead of looping.
void train_raising(TorchTrainerHook& hook, int64_t raise_at, int signal_number, int limit = 20) {
  for (int i = 0; i < limit && !hook.done(); ++i) {
    hook.run_iteration([&] {
      if (hook.iteration() + 1 == raise_at) std::raise(signal_number);
    });
  }
}

std::string snapshot_path(const std::string& out, int64_t iteration) {
  return fmt::format("{}/snapshot_iter_{}", out, iteration);
}

// ---- in this process ----

TEST(SaveOnSignal, RaisedSignalSavesAfterEveryOtherExtensionOfThatIterationAndStops) {
  KeepDisposition keep(SIGUSR1);
  TempDir dir;
  const std::string out = dir / "out";
  Training training(out);
  TorchTrainerHook& hook = *training.hook;
  std::vector<std::string> log;
  hook.extend(std::make_shared<Recorder>("reader", &log));
  hook.extend(snapshot(SnapshotOptions().savefun(logging_savefun(&log))),
              ExtendOptions().trigger(TriggerRef::never()));
  hook.extend(std::make_shared<Recorder>("late", &log),
              ExtendOptions().priority(priority::kSnapshot - 50));
  hook.extend(save_on_signal(SaveOnSignalOptions().signals({SIGUSR1})));
  CapturedWarnings warnings;

  train_raising(hook, /*raise_at=*/3, SIGUSR1);

  EXPECT_EQ(hook.iteration(), 3);
  EXPECT_TRUE(hook.done());
  EXPECT_EQ(log, (std::vector<std::string>{"reader:initialize@0", "late:initialize@0",           //
                                           "reader:call@1", "late:call@1", "reader:call@2",      //
                                           "late:call@2", "reader:call@3", "late:call@3",        //
                                           "save@3", "reader:finalize@3", "late:finalize@3"}));  //
  EXPECT_EQ(warnings.messages(),
            std::vector<std::string>{
                fmt::format("save_on_signal: SIGUSR1 received; saved '{}' at iteration 3; stopping",
                            snapshot_path(out, 3))});
  EXPECT_EQ(read_snapshot(snapshot_path(out, 3)).get_int(kIterationKey), 3);
  EXPECT_EQ(files_in(out), std::vector<std::string>{"snapshot_iter_3"});
}

TEST(SaveOnSignal, DoesNotSaveAgainASnapshotThatSavedAtThisIteration) {
  KeepDisposition keep(SIGUSR1);
  TempDir dir;
  Training training(dir / "out");
  std::vector<std::string> log;
  training.hook->extend(snapshot(SnapshotOptions().savefun(logging_savefun(&log))),
                        ExtendOptions().trigger({1, iteration}));
  training.hook->extend(save_on_signal());
  train_raising(*training.hook, 2, SIGUSR1);
  // The snapshot's trigger fired at iteration 2: its file holds that state already.
  EXPECT_EQ(log, (std::vector<std::string>{"save@1", "save@2"}));
  EXPECT_EQ(files_in(dir / "out"),
            (std::vector<std::string>{"snapshot_iter_1", "snapshot_iter_2"}));
  EXPECT_EQ(read_snapshot(snapshot_path(dir / "out", 2)).get_int(kIterationKey), 2);
}

volatile std::sig_atomic_t counted_signals = 0;
void count_signal(int) { ++counted_signals; }

TEST(SaveOnSignal, RestoresThePreviousHandlersAtFinalize) {
  KeepDisposition keep_usr1(SIGUSR1), keep_term(SIGTERM);
  struct sigaction counting {};
  counting.sa_handler = count_signal;
  sigemptyset(&counting.sa_mask);
  sigaddset(&counting.sa_mask, SIGUSR2);
  ASSERT_EQ(::sigaction(SIGUSR1, &counting, nullptr), 0);
  ASSERT_EQ(::signal(SIGTERM, SIG_IGN), SIG_DFL);

  TempDir dir;
  Training training(dir / "out");
  training.hook->extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
  auto extension = save_on_signal();
  training.hook->extend(extension);
  training.hook->start();
  EXPECT_TRUE(extension->active());
  EXPECT_NE(current_action(SIGUSR1).sa_handler, count_signal);
  EXPECT_NE(current_action(SIGTERM).sa_handler, SIG_IGN);
  EXPECT_TRUE(current_action(SIGTERM).sa_flags & SA_RESTART);
  training.steps(2);
  training.hook->finalize();

  EXPECT_FALSE(extension->active());
  const struct sigaction usr1 = current_action(SIGUSR1);
  EXPECT_EQ(usr1.sa_handler, count_signal);
  EXPECT_TRUE(sigismember(&usr1.sa_mask, SIGUSR2));
  EXPECT_EQ(current_action(SIGTERM).sa_handler, SIG_IGN);
  counted_signals = 0;
  std::raise(SIGUSR1);
  EXPECT_EQ(counted_signals, 1);
}

TEST(SaveOnSignal, RestoresThePreviousHandlersWhenTrainingFails) {
  KeepDisposition keep(SIGUSR1);
  struct sigaction counting {};
  counting.sa_handler = count_signal;
  sigemptyset(&counting.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR1, &counting, nullptr), 0);
  TempDir dir;
  Training training(dir / "out");
  training.hook->extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
  training.hook->extend(save_on_signal(SaveOnSignalOptions().signals({SIGUSR1})));
  training.steps(1);
  EXPECT_NE(current_action(SIGUSR1).sa_handler, count_signal);
  EXPECT_THROW(training.hook->run_iteration([] { throw std::runtime_error("diverged"); }),
               std::runtime_error);
  EXPECT_EQ(current_action(SIGUSR1).sa_handler, count_signal);
}

TEST(SaveOnSignal, NoSnapshotIsAnErrorAtInitializeAndInstallsNothing) {
  TempDir dir;
  const struct sigaction before = current_action(SIGTERM);
  Training training(dir / "out");
  std::vector<std::string> log;
  training.hook->extend(std::make_shared<Recorder>("reader", &log));
  training.hook->extend(save_on_signal());
  EXPECT_THROW_WITH(training.hook->start(), Error,
                    "save_on_signal: no snapshot extension is registered with the hook, so a "
                    "signal would save nothing; extend the hook with tth::snapshot()");
  EXPECT_EQ(current_action(SIGTERM).sa_handler, before.sa_handler);
  EXPECT_TRUE(training.hook->done());  // the error path ran
}

TEST(SaveOnSignal, SnapshotsOptionChoosesWhatASignalSaves) {
  KeepDisposition keep(SIGUSR1);
  TempDir dir;
  const std::string out = dir / "out";
  Training training(out);
  training.hook->extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
  training.hook->extend(snapshot_object(training.model, "best_{iteration}.pt"),
                        ExtendOptions().name("best").trigger(TriggerRef::never()));
  training.hook->extend(save_on_signal(SaveOnSignalOptions().snapshots({"snapshot"})));
  train_raising(*training.hook, 2, SIGUSR1);
  EXPECT_EQ(training.hook->iteration(), 2);
  EXPECT_EQ(files_in(out), std::vector<std::string>{"snapshot_iter_2"});
}

TEST(SaveOnSignal, SavesEverySnapshotByDefault) {
  KeepDisposition keep(SIGUSR1);
  TempDir dir;
  const std::string out = dir / "out";
  Training training(out);
  training.hook->extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
  training.hook->extend(snapshot_object(training.model, "model_{iteration}.pt"),
                        ExtendOptions().trigger(TriggerRef::never()));
  training.hook->extend(save_on_signal());
  CapturedWarnings warnings;
  train_raising(*training.hook, 2, SIGUSR1);
  EXPECT_EQ(training.hook->iteration(), 2);
  EXPECT_EQ(files_in(out), (std::vector<std::string>{"model_2.pt", "snapshot_iter_2"}));
  EXPECT_TRUE(warnings.contains(fmt::format(
      "save_on_signal: SIGUSR1 received; saved '{}', '{}/model_2.pt' at iteration 2; stopping",
      snapshot_path(out, 2), out)));
}

TEST(SaveOnSignal, SnapshotsOptionNamingAnythingButASnapshotIsAnError) {
  TempDir dir;
  for (const char* name : {"nope", "reader"}) {
    Training training(dir / name);
    std::vector<std::string> log;
    training.hook->extend(std::make_shared<Recorder>("reader", &log));
    training.hook->extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
    training.hook->extend(save_on_signal(SaveOnSignalOptions().snapshots({name})));
    const std::string expected =
        std::string(name) == "nope"
            ? "save_on_signal: snapshots must name registered snapshot extensions, got 'nope', "
              "which is not registered (registered: reader, snapshot, save_on_signal)"
            : "save_on_signal: snapshots must name registered snapshot extensions, got "
              "'reader', which is not a snapshot";
    EXPECT_THROW_WITH(training.hook->start(), Error, expected);
  }
}

TEST(SaveOnSignal, StopFalseSavesAndContinues) {
  KeepDisposition keep(SIGUSR1);
  TempDir dir;
  const std::string out = dir / "out";
  Training training(out);
  TorchTrainerHook hook(HookOptions(4).out(out).stop_trigger({6, iteration}));
  hook.add_model("main", training.model);
  hook.extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
  hook.extend(save_on_signal(SaveOnSignalOptions().stop(false)));
  CapturedWarnings warnings;
  int iterations = 0;
  while (!hook.done() && iterations++ < 20) {
    hook.run_iteration([&] {
      if (hook.iteration() + 1 == 2 || hook.iteration() + 1 == 4) std::raise(SIGUSR1);
    });
  }
  EXPECT_EQ(hook.iteration(), 6);
  EXPECT_EQ(files_in(out), (std::vector<std::string>{"snapshot_iter_2", "snapshot_iter_4"}));
  EXPECT_EQ(warnings.messages(),
            (std::vector<std::string>{
                fmt::format("save_on_signal: SIGUSR1 received; saved '{}' at iteration 2; "
                            "continuing",
                            snapshot_path(out, 2)),
                fmt::format("save_on_signal: SIGUSR1 received; saved '{}' at iteration 4; "
                            "continuing",
                            snapshot_path(out, 4))}));
}

TEST(SaveOnSignal, ASecondActiveOneForTheSameSignalIsRefused) {
  KeepDisposition keep_usr1(SIGUSR1), keep_usr2(SIGUSR2);
  TempDir dir;
  auto make = [&](const std::string& name, std::vector<int> signals) {
    auto training = std::make_unique<Training>(dir / name);
    training->hook->extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
    training->hook->extend(save_on_signal(SaveOnSignalOptions().signals(std::move(signals))));
    return training;
  };
  auto first = make("first", {SIGUSR1});
  first->steps(1);

  const struct sigaction usr2_before = current_action(SIGUSR2);
  auto refused = make("refused", {SIGUSR2, SIGUSR1});
  EXPECT_THROW_WITH(refused->hook->start(), Error,
                    "save_on_signal: SIGUSR1 is already handled by another active "
                    "save_on_signal (another hook in this process); signal handlers are "
                    "process-wide, so give each hook its own signals or finalize the other "
                    "hook first");
  EXPECT_EQ(current_action(SIGUSR2).sa_handler, usr2_before.sa_handler);  // nothing installed

  // Other signals may be handled beside it, each by its own extension.
  auto beside = make("beside", {SIGUSR2});
  train_raising(*beside->hook, 1, SIGUSR2);
  EXPECT_EQ(beside->hook->iteration(), 1);
  EXPECT_TRUE(fs::exists(snapshot_path(dir / "beside", 1)));
  first->steps(1);
  EXPECT_FALSE(first->hook->done());

  // Once the first is finalized, its signal is free again.
  first->hook->finalize();
  auto next = make("next", {SIGUSR1});
  train_raising(*next->hook, 2, SIGUSR1);
  EXPECT_EQ(next->hook->iteration(), 2);
  EXPECT_TRUE(fs::exists(snapshot_path(dir / "next", 2)));
}

TEST(SaveOnSignal, SignalAfterTheLastIterationIsWarnedAboutAtFinalize) {
  KeepDisposition keep(SIGUSR1);
  TempDir dir;
  const std::string out = dir / "out";
  Training training(out);
  TorchTrainerHook hook(HookOptions(4).out(out).stop_trigger({2, iteration}));
  hook.add_model("main", training.model);
  hook.extend(snapshot(), ExtendOptions().trigger(TriggerRef::never()));
  hook.extend(save_on_signal());
  CapturedWarnings warnings;
  test::run_empty(hook, 2);
  std::raise(SIGUSR1);  // the stop trigger fired: no iteration boundary is left
  EXPECT_TRUE(hook.done());
  EXPECT_EQ(warnings.messages(),
            std::vector<std::string>{"save_on_signal: SIGUSR1 received after the last iteration "
                                     "boundary (iteration 2); nothing saved for it"});
  EXPECT_TRUE(files_in(out).empty());
}

TEST(SaveOnSignal, RejectsSignalsItCannotHandle) {
  EXPECT_THROW_WITH(SaveOnSignal(SaveOnSignalOptions().signals({})), Error,
                    "SaveOnSignalOptions: signals must not be empty");
  for (int refused : {SIGKILL, SIGSTOP, SIGSEGV, 0, NSIG}) {
    EXPECT_THROW_WITH(SaveOnSignal(SaveOnSignalOptions().signals({SIGTERM, refused})), Error,
                      "SaveOnSignalOptions: signals must hold catchable signals that are not "
                      "faults (not SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, "
                      "SIGABRT), got " +
                          std::to_string(refused));
  }
  EXPECT_EQ(SaveOnSignal(SaveOnSignalOptions().signals({SIGTERM, SIGUSR1, SIGTERM})).signals(),
            (std::vector<int>{SIGTERM, SIGUSR1}));
  EXPECT_EQ(SaveOnSignal().signals(), (std::vector<int>{SIGTERM, SIGUSR1}));
  EXPECT_EQ(SaveOnSignal().default_priority(), std::numeric_limits<int>::min());
}

// ---- a child process that gets real signals from kill(2) ----

// snapshot_child with stdout and stderr on one pipe, read line by line with a timeout, and
// stdin on a socket (a write to a child that is gone fails with EPIPE instead of SIGPIPE).
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    args.insert(args.begin(), TTH_SNAPSHOT_CHILD);
    int fds[2], input[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, input) != 0) {
      throw std::runtime_error("socketpair failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_adddup2(&actions, input[1], STDIN_FILENO);
    for (int fd : {fds[0], fds[1], input[0], input[1]}) {
      posix_spawn_file_actions_addclose(&actions, fd);
    }
    // The child starts with default dispositions and nothing blocked, whatever this test
    // process did to its own.
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t defaults, empty;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGUSR1);
    sigemptyset(&empty);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setsigmask(&attributes, &empty);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const int spawned = posix_spawn(&pid_, argv[0], &actions, &attributes, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    ::close(fds[1]);
    ::close(input[1]);
    fd_ = fds[0];
    input_ = input[0];
    if (spawned != 0) {
      pid_ = -1;
      throw std::runtime_error("posix_spawn failed: " + std::string(std::strerror(spawned)));
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(fd_);
    ::close(input_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  /// Reads up to the first line that starts with `prefix` and returns it; empty at the end of
  /// the output or after `timeout_s` without output (the child is then killed).
  std::string wait_for(const std::string& prefix, int timeout_s = 60) {
    while (auto line = read_line(timeout_s)) {
      if (line->compare(0, prefix.size(), prefix) == 0) return *line;
    }
    return {};
  }
  void send(int signal_number) { ASSERT_EQ(::kill(pid_, signal_number), 0); }
  /// Writes `line` to the child's stdin.
  void say(const std::string& line) {
    const std::string text = line + "\n";
    EXPECT_EQ(::send(input_, text.data(), text.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(text.size()));
  }
  /// Reads the rest of the output and returns the wait status.
  int finish() {
    while (read_line(60)) {
    }
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  /// Everything read so far.
  const std::string& output() const { return output_; }

 private:
  std::optional<std::string> read_line(int timeout_s) {
    for (;;) {
      const size_t end = pending_.find('\n');
      if (end != std::string::npos) {
        std::string line = pending_.substr(0, end);
        pending_.erase(0, end + 1);
        output_ += line + "\n";
        return line;
      }
      pollfd readable{fd_, POLLIN, 0};
      if (::poll(&readable, 1, timeout_s * 1000) <= 0) {
        output_ += "<no output for " + std::to_string(timeout_s) + " s: killed>\n";
        ::kill(pid_, SIGKILL);
        return std::nullopt;
      }
      char chunk[4096];
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n <= 0) {
        output_ += pending_;
        pending_.clear();
        return std::nullopt;
      }
      pending_.append(chunk, static_cast<size_t>(n));
    }
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  int input_ = -1;
  std::string pending_;
  std::string output_;
};

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

int64_t stopped_by_signal_at(const std::string& output) {
  std::smatch match;
  if (!std::regex_search(output, match, std::regex("stopped at (\\d+) by signal"))) return -1;
  return std::stoll(match[1]);
}

size_t count_of(const std::string& text, const std::string& fragment) {
  size_t count = 0;
  for (size_t at = text.find(fragment); at != std::string::npos; at = text.find(fragment, at + 1))
    ++count;
  return count;
}

// The child saved at the iteration it reports, exited 0, left exactly that file, and a fresh
// process resumes from it at that iteration.
void expect_saved_and_resumable(const std::string& out, int status, const std::string& output,
                                const char* signal) {
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe_status(status) << "\n"
                                                             << output;
  const int64_t saved_at = stopped_by_signal_at(output);
  ASSERT_GE(saved_at, 3) << output;
  const std::string path = snapshot_path(out, saved_at);
  EXPECT_EQ(count_of(output, "received; saved"), 1u) << output;
  EXPECT_THAT(output, ::testing::HasSubstr(fmt::format(
                          "save_on_signal: {} received; saved '{}' at iteration {}; stopping",
                          signal, path, saved_at)));
  EXPECT_THAT(output, ::testing::Not(::testing::HasSubstr("nothing saved")));
  EXPECT_EQ(files_in(out), std::vector<std::string>{fs::path(path).filename().string()});
  EXPECT_EQ(read_snapshot(path).get_int(kIterationKey), saved_at);

  const auto resumed = run_command(fmt::format("{} signal --out {} --iterations {}",
                                               TTH_SNAPSHOT_CHILD, shell_quote(out), saved_at + 2));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, ::testing::HasSubstr(
                                  fmt::format("resumed from '{}' (iteration {})", path, saved_at)));
  EXPECT_THAT(resumed.output, ::testing::HasSubstr(fmt::format("start {}\n", saved_at)));
  EXPECT_THAT(resumed.output,
              ::testing::HasSubstr(fmt::format("stopped at {} by trigger", saved_at + 2)));
}

void expect_signal_saves(int signal_number, const char* signal, const std::string& writer) {
  TempDir dir;
  const std::string out = dir / "out";
  Child child({"signal", "--out", out, "--writer", writer});
  ASSERT_FALSE(child.wait_for("iteration 3").empty()) << child.output();
  child.send(signal_number);
  const int status = child.finish();
  expect_saved_and_resumable(out, status, child.output(), signal);
}

// The first signal starts a save that waits after writing its temp file; the second arrives
// while that temp file is not yet committed (the save goes on only when told, after it).
void expect_second_signal_harmless(int second, const std::string& writer) {
  TempDir dir;
  const std::string out = dir / "out";
  Child child({"signal", "--out", out, "--writer", writer, "--slow-save", "30000"});
  ASSERT_FALSE(child.wait_for("iteration 3").empty()) << child.output();
  child.send(SIGTERM);
  const std::string saving = child.wait_for("saving ");
  ASSERT_FALSE(saving.empty()) << child.output();
  const std::string temp = saving.substr(std::string("saving ").size());
  EXPECT_TRUE(fs::exists(temp)) << temp;
  child.send(second);
  child.say("go on");
  const int status = child.finish();
  expect_saved_and_resumable(out, status, child.output(), "SIGTERM");
  EXPECT_FALSE(fs::exists(temp));
}

TEST(SaveOnSignalChild, SigtermSavesExitsZeroAndResumes) {
  expect_signal_saves(SIGTERM, "SIGTERM", "simple");
}

TEST(SaveOnSignalChild, Sigusr1SavesExitsZeroAndResumes) {
  expect_signal_saves(SIGUSR1, "SIGUSR1", "simple");
}

TEST(SaveOnSignalChild, SecondSignalDuringASlowSaveIsHarmless) {
  expect_second_signal_harmless(SIGTERM, "simple");
  expect_second_signal_harmless(SIGUSR1, "simple");
}

TEST(SaveOnSignalChild, AsynchronousWritersFinishTheirWriteBeforeTheExit) {
  expect_signal_saves(SIGTERM, "SIGTERM", "thread");
  expect_signal_saves(SIGUSR1, "SIGUSR1", "queue");
  expect_second_signal_harmless(SIGTERM, "thread");
  expect_second_signal_harmless(SIGTERM, "queue");
}

TEST(SaveOnSignalChild, WithoutASignalTheChildRunsToItsStopTrigger) {
  // The control: what the tests above see is the signal's doing.
  TempDir dir;
  const auto result = run_command(fmt::format("{} signal --out {} --iterations 4",
                                              TTH_SNAPSHOT_CHILD, shell_quote(dir / "out")));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, ::testing::HasSubstr("start 0\n"));
  EXPECT_THAT(result.output, ::testing::HasSubstr("stopped at 4 by trigger"));
  EXPECT_TRUE(files_in(dir / "out").empty());
}

}  // namespace
}  // namespace tth
