// One run per output directory (TorchTrainerHook::start, lock_directory; DirectoryLock in
// plugin/posix_file.h): a second run, in another process or in this one, fails at start naming
// the holder and touches nothing; stale temp files are removed only under the lock. Also the
// smaller file-safety fixes: atomic_write and `tth convert` refuse a target that is not a
// regular file, `tth convert` cleans its stale temps and names a bad --to, and the example
// reports errors instead of aborting.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"
#include "test_programs.h"

extern char** environ;

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::CapturedWarnings;
using test::kNoReadOnlyDirectory;
using test::read_file;
using test::ReadOnlyDirectory;
using test::Recorder;
using test::run_command;
using test::shell_quote;
using test::TempDir;
using test::write_file;
using ::testing::HasSubstr;

constexpr char kTemp[] = ".snapshot_iter_7.tmp.abcdefghij12";

// The regular files directly in `dir`, sorted.
std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string in_use(const std::string& what, const std::string& dir, long pid,
                   const std::string& advice) {
  return fmt::format(
      "TorchTrainerHook: {} '{}' is in use by another run (pid {} holds '{}'); give each run "
      "its own {}",
      what, dir, pid, (fs::path(dir) / kLockFileName).string(), advice);
}

std::string out_in_use(const std::string& out, long pid) {
  return in_use("output directory", out, pid, "out directory");
}

// A snapshot_child process with its stdin and (stdout + stderr) on pipes.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
    args.insert(args.begin(), TTH_SNAPSHOT_CHILD);
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const int spawned = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    if (spawned != 0) throw std::runtime_error("posix_spawn failed");
    stdin_ = in[1];
    stdout_ = ::fdopen(out[0], "r");
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ != nullptr) std::fclose(stdout_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }

  // The next output line that starts with `prefix` (the lines before it are kept in output());
  // empty at the end of the output.
  std::string line_starting(const std::string& prefix) {
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, stdout_) != nullptr) {
      std::string line(buffer);
      output_ += line;
      if (!line.empty() && line.back() == '\n') line.pop_back();
      if (line.rfind(prefix, 0) == 0) return line;
    }
    return "";
  }
  void send_line() {
    const char newline = '\n';
    ASSERT_EQ(::write(stdin_, &newline, 1), 1);
  }
  void kill() { ::kill(pid_, SIGKILL); }
  // Waits for the end; returns the exit status, or -signal. Reads the rest of the output.
  int wait() {
    line_starting("\x01");  // reads to the end
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  FILE* stdout_ = nullptr;
  std::string output_;
};

// Starts `snapshot_child hold` on `out` and waits until its second snapshot is in flight;
// returns the temp file being written.
std::string start_holding(Child& holder) {
  const std::string line = holder.line_starting("writing ");
  EXPECT_FALSE(line.empty()) << "the holding run did not start:\n" << holder.output();
  return line.substr(std::string("writing ").size());
}

TEST(RunLock, ASecondProcessFailsAtStartNamingTheHolderAndTouchesNothing) {
  TempDir dir;
  const std::string out = dir / "out";
  Child holder({"hold", "--out", out});
  const std::string temp = start_holding(holder);
  ASSERT_TRUE(fs::exists(temp));
  const auto files_before = names_in(out);
  const auto snapshot_before = read_file(out + "/snapshot_iter_1");
  EXPECT_EQ(files_before, (std::vector<std::string>{fs::path(temp).filename().string(),
                                                    kLockFileName, "snapshot_iter_1"}));
  const std::string pid_line = fmt::format("{}\n", holder.pid());
  EXPECT_EQ(read_file(out + "/LOCK"), test::Bytes(pid_line.begin(), pid_line.end()));

  // Its autoload, temp clean-up and n_retains 3 would otherwise act on the holder's files.
  const auto second =
      run_command(std::string(TTH_SNAPSHOT_CHILD) + " start --out " + shell_quote(out));
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_THAT(second.output, HasSubstr(out_in_use(out, holder.pid())));
  EXPECT_THAT(second.output, ::testing::Not(HasSubstr("removed")));
  EXPECT_EQ(names_in(out), files_before);
  EXPECT_EQ(read_file(out + "/snapshot_iter_1"), snapshot_before);

  // The holder's write completes: its temp file was never touched.
  holder.send_line();
  EXPECT_EQ(holder.wait(), 0) << holder.output();
  EXPECT_THAT(holder.output(), HasSubstr("done"));
  EXPECT_EQ(names_in(out), (std::vector<std::string>{"snapshot_iter_2"}));  // LOCK removed
  EXPECT_EQ(read_snapshot(out + "/snapshot_iter_2").get_int(kIterationKey), 2);

  // Once it has ended, a new run starts and resumes from it.
  const auto third =
      run_command(std::string(TTH_SNAPSHOT_CHILD) + " start --out " + shell_quote(out));
  EXPECT_EQ(third.exit_code, 0) << third.output;
  EXPECT_THAT(third.output, HasSubstr("resumed from '" + out + "/snapshot_iter_2'"));
}

TEST(RunLock, AKilledRunsLockFileBlocksNobodyAndItsTempIsRemoved) {
  TempDir dir;
  const std::string out = dir / "out";
  Child holder({"hold", "--out", out});
  const std::string temp = start_holding(holder);
  holder.kill();
  EXPECT_EQ(holder.wait(), -SIGKILL);
  ASSERT_TRUE(fs::exists(out + "/LOCK"));  // left behind, with the dead run's pid
  ASSERT_TRUE(fs::exists(temp));
  const auto next =
      run_command(std::string(TTH_SNAPSHOT_CHILD) + " start --out " + shell_quote(out));
  EXPECT_EQ(next.exit_code, 0) << next.output;
  EXPECT_THAT(next.output, HasSubstr("removed '" + temp + "' left by an interrupted write"));
  EXPECT_THAT(next.output, HasSubstr("resumed from '" + out + "/snapshot_iter_1'"));
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_FALSE(fs::exists(out + "/LOCK"));
}

TEST(RunLock, ASecondManagerInThisProcessFailsBeforeAnythingRunsUntilTheFirstEnds) {
  TempDir dir;
  const std::string out = dir / "out";
  TorchTrainerHook first(HookOptions(2).out(out));
  first.extend(snapshot(), ExtendOptions().trigger({1, iteration}));
  first.run_iteration([] {});
  write_file(out + "/" + kTemp, {'x'});  // as if `first` were writing it now

  std::vector<std::string> log;
  TorchTrainerHook second(HookOptions(2).out(out + "/."));  // the same directory
  second.extend(std::make_shared<Recorder>("recorder", &log));
  second.extend(snapshot(SnapshotOptions().autoload(true).n_retains(1).snapshot_on_error(true)),
                ExtendOptions().trigger({1, iteration}));
  EXPECT_THROW_WITH(second.done(), Error, out_in_use(out + "/.", ::getpid()));
  EXPECT_FALSE(second.started());
  EXPECT_TRUE(log.empty());  // no resume, initialize, on_error or finalize: it never started
  EXPECT_EQ(names_in(out),
            (std::vector<std::string>{kTemp, kLockFileName, "snapshot_iter_1"}));  // untouched
  EXPECT_THROW_WITH(second.run_iteration([] {}), Error, "is in use by another run");

  first.finalize();
  EXPECT_FALSE(fs::exists(out + "/LOCK"));
  TorchTrainerHook third(HookOptions(2).out(out));
  third.run_iteration([] {});
  EXPECT_TRUE(fs::exists(out + "/LOCK"));
}

TEST(RunLock, DestroyingOrFailingReleasesTheLock) {
  TempDir dir;
  const std::string out = dir / "out";
  {
    TorchTrainerHook hook(HookOptions(2).out(out));
    hook.run_iteration([] {});
  }
  EXPECT_FALSE(fs::exists(out + "/LOCK"));
  TorchTrainerHook failing(HookOptions(2).out(out));
  EXPECT_THROW(failing.run_iteration([] { throw std::runtime_error("nan"); }), std::runtime_error);
  EXPECT_FALSE(fs::exists(out + "/LOCK"));
  TorchTrainerHook next(HookOptions(2).out(out));
  EXPECT_NO_THROW(next.run_iteration([] {}));
}

TEST(RunLock, SnapshotDirectoriesOutsideOutAndBelowItAreLockedToo) {
  TempDir dir;
  const std::string shared = dir / "shared";
  fs::create_directories(shared);
  write_file(shared + "/" + kTemp, {'x'});  // left by a killed run: removed by the next holder
  const std::string absolute = shared + "/s_{iteration}";

  TorchTrainerHook first(HookOptions(2).out(dir / "a"));
  first.extend(snapshot(SnapshotOptions().filename(absolute).n_retains(1)),
               ExtendOptions().trigger({1, iteration}));
  first.extend(snapshot_object(std::make_shared<torch::nn::LinearImpl>(2, 2), "snaps/m_{iteration}",
                               SnapshotOptions().n_retains(1)),
               ExtendOptions().trigger({1, iteration}));
  first.run_iteration([] {});
  EXPECT_FALSE(fs::exists(shared + "/" + kTemp));
  write_file(shared + "/" + kTemp, {'x'});  // as if `first` were writing it now
  const auto shared_before = names_in(shared);

  // Another out, the same absolute snapshot directory.
  TorchTrainerHook second(HookOptions(2).out(dir / "b"));
  second.extend(snapshot(SnapshotOptions().filename(absolute).n_retains(1).snapshot_on_error(true)),
                ExtendOptions().trigger({1, iteration}));
  EXPECT_THROW_WITH(second.done(), Error,
                    "is in use by another run (pid " + std::to_string(::getpid()) + " holds '" +
                        shared + "/LOCK'); give each run its own directory");
  EXPECT_EQ(names_in(shared), shared_before);        // not even an on_error snapshot
  EXPECT_TRUE(fs::exists(dir / "b/LOCK") == false);  // released by the failed start

  // A run whose out is the other run's snapshot subdirectory.
  TorchTrainerHook nested(HookOptions(2).out(dir / "a/snaps"));
  EXPECT_THROW_WITH(nested.done(), Error, out_in_use(dir / "a/snaps", ::getpid()));

  first.finalize();
  EXPECT_FALSE(fs::exists(shared + "/LOCK"));
  EXPECT_FALSE(fs::exists(dir / "a/snaps/LOCK"));
}

TEST(RunLock, AnUnwritableOutputDirectoryFailsAtStartNamingItAndTheError) {
  TempDir dir;
  const std::string out = dir / "ro";
  fs::create_directories(out);
  const ReadOnlyDirectory read_only(out);
  if (!read_only.available()) GTEST_SKIP() << kNoReadOnlyDirectory;
  const std::string reason = read_only.write_error();
  std::vector<std::string> log;
  TorchTrainerHook hook(HookOptions(2).out(out));
  hook.extend(std::make_shared<Recorder>("recorder", &log));
  EXPECT_THROW_WITH(hook.done(), IOError,
                    "TorchTrainerHook: cannot use output directory '" + out +
                        "': create or lock '" + out + "/LOCK': " + reason);
  EXPECT_TRUE(log.empty());
}

// ---- atomic_write and tth convert refuse what is not a regular file ----

bool is_fifo(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISFIFO(info.st_mode);
}

TEST(AtomicWrite, RefusesAFifoOrADeviceInsteadOfReplacingIt) {
  TempDir dir;
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  bool wrote = false;
  EXPECT_THROW_WITH(atomic_write(fifo, [&](const std::string&) { wrote = true; }), Error,
                    "atomic_write: '" + fifo + "' exists and is not a regular file (a FIFO)");
  EXPECT_FALSE(wrote);
  EXPECT_TRUE(is_fifo(fifo));
  EXPECT_EQ(names_in(dir.path().string()), std::vector<std::string>{"fifo"});  // no temp left
  EXPECT_THROW_WITH(atomic_write(dir.path().string(), [](const std::string&) {}), Error,
                    "is not a regular file (a directory)");
  // A character device of our own (never /dev/null: a regression would replace it).
  const std::string device = dir / "null";
  if (::mknod(device.c_str(), S_IFCHR | 0600, makedev(1, 3)) == 0) {
    EXPECT_THROW_WITH(atomic_write(device, [](const std::string&) {}), Error,
                      "'" + device + "' exists and is not a regular file (a character device)");
    struct stat info {};
    ASSERT_EQ(::stat(device.c_str(), &info), 0);
    EXPECT_TRUE(S_ISCHR(info.st_mode));
  }
  // A regular file, also through a symbolic link, is replaced as before.
  write_file(dir / "file", {'a'});
  fs::create_symlink(dir / "file", dir / "link");
  atomic_write(dir / "link", [](const std::string& temp) { write_file(temp, {'b'}); });
  EXPECT_EQ(read_file(dir / "link"), test::Bytes{'b'});
}

// A small valid snapshot file at `path`.
void write_snapshot(const std::string& path) {
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  state.set_int(kIterationKey, 3);
  state.set("models/main/weight", torch::arange(6, torch::kFloat32).reshape({2, 3}));
  npz_savefun()(path, state);
}

std::string tool(const std::string& args) { return std::string(TTH_TOOL) + " " + args; }

TEST(Tool, VerifyOfAFifoFailsWithoutHanging) {
  TempDir dir;
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto result = run_command("timeout 20 " + tool("verify " + shell_quote(fifo)));
  EXPECT_EQ(result.exit_code, 1) << result.output;  // timeout's 124 if it hung
  EXPECT_THAT(result.output,
              HasSubstr("FAILED " + fifo + ": '" + fifo + "' is not a regular file (a FIFO)"));
}

TEST(Tool, ConvertRefusesAFifoAsOutput) {
  TempDir dir;
  write_snapshot(dir / "in.npz");
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto result = run_command(
      "timeout 20 " + tool("convert " + shell_quote(dir / "in.npz") + " " + shell_quote(fifo)));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr("tth: atomic_write: '" + fifo +
                                       "' exists and is not a regular file (a FIFO)"));
  EXPECT_TRUE(is_fifo(fifo));
  EXPECT_EQ(names_in(dir.path().string()), (std::vector<std::string>{"fifo", "in.npz"}));
}

TEST(Tool, ConvertNamesABadToValue) {
  TempDir dir;
  write_snapshot(dir / "in.npz");
  const auto result = run_command(tool("convert " + shell_quote(dir / "in.npz") + " " +
                                       shell_quote(dir / "out") + " --to xyz"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_THAT(result.output, HasSubstr("tth convert: --to must be npz or torch, got 'xyz'"));
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Tool, ConvertRemovesStaleTempsUnlessARunHoldsTheDirectory) {
  TempDir dir;
  write_snapshot(dir / "in.npz");
  const std::string out = dir / "out";
  fs::create_directories(out);
  write_file(out + "/" + kTemp, {'x'});  // left by a killed convert
  const std::string convert =
      tool("convert " + shell_quote(dir / "in.npz") + " " + shell_quote(out + "/converted.pt"));
  const auto first = run_command(convert);
  EXPECT_EQ(first.exit_code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("convert: removed '" + out + "/" + kTemp +
                                      "' left by an interrupted write"));
  EXPECT_EQ(names_in(out), std::vector<std::string>{"converted.pt"});  // no temp, no LOCK
  EXPECT_EQ(read_snapshot(out + "/converted.pt").get_int(kIterationKey), 3);

  // A run holds the directory: its temp file may be in flight, and stays.
  TorchTrainerHook run(HookOptions(2).out(out));
  run.run_iteration([] {});
  write_file(out + "/" + kTemp, {'x'});
  const auto second = run_command(convert);
  EXPECT_EQ(second.exit_code, 0) << second.output;
  EXPECT_THAT(second.output, ::testing::Not(HasSubstr("removed")));
  EXPECT_TRUE(fs::exists(out + "/" + kTemp));
  EXPECT_EQ(read_snapshot(out + "/converted.pt").get_int(kIterationKey), 3);
}

// ---- the example ----

TEST(Example, ReportsAnErrorAndExitsWithStatus1) {
#ifdef TTH_EXAMPLE
  TempDir dir;
  write_file(dir / "file", {'x'});  // --out names a regular file: no directory can be made
  const auto result =
      run_command(std::string(TTH_EXAMPLE) + " --epochs 1 --out " + shell_quote(dir / "file"));
  EXPECT_EQ(result.exit_code, 1) << result.output;  // -1 when it died of SIGABRT
  EXPECT_THAT(result.output,
              HasSubstr("train_synthetic: create output directory '" + (dir / "file") + "'"));
#else
  GTEST_SKIP() << "the examples are not built (TTH_BUILD_EXAMPLES=OFF)";
#endif
}

}  // namespace
}  // namespace tth
