// ThreadWriter and QueueWriter (async_writer.h): the file holds the state of the call, one
// write in flight, the byte bound of the queue, errors raised later and never lost, finalize
// waits, buffers reused, retention after the background commit.
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "support.h"

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::CapturedWarnings;
using test::files_in;
using test::same_tensor;
using test::TempDir;
using test::Training;

// Long enough for a wrongly returning write() to be seen, short enough for the suite.
constexpr auto kSettle = std::chrono::milliseconds(200);

// A savefun that blocks until opened, counting the saves that entered and the most that ran
// at once. It saves with the LibTorch archive savefun.
class Gate {
 public:
  /// Waits until open(), then saves with `then`.
  SaveFunction savefun(SaveFunction then = torch_savefun()) {
    return [this, then](const std::string& path, const StateDict& state) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ++entered_;
        max_running_ = std::max(max_running_, ++running_);
        changed_.notify_all();
        changed_.wait(lock, [&] { return open_; });
      }
      if (state.contains("w")) data_pointers_.push_back(state.tensor("w").data_ptr());
      struct Leave {  // also when `then` throws
        Gate* gate;
        ~Leave() {
          std::lock_guard<std::mutex> lock(gate->mutex_);
          --gate->running_;
        }
      } leave{this};
      then(path, state);
    };
  }
  void open() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  void wait_entered(int count) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return entered_ >= count; });
  }
  int entered() {
    std::lock_guard<std::mutex> lock(mutex_);
    return entered_;
  }
  int max_running() {
    std::lock_guard<std::mutex> lock(mutex_);
    return max_running_;
  }
  // The address of "w" in each saved state, in order (touched by the writer's thread only
  // until finalize returned).
  const std::vector<void*>& data_pointers() const { return data_pointers_; }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
  int entered_ = 0;
  int running_ = 0;
  int max_running_ = 0;
  std::vector<void*> data_pointers_;
};

// A state of `mib` MiB under "w" that aliases `live` (as a hook's state aliases parameters).
StateDict aliasing_state(const at::Tensor& live) {
  StateDict state;
  state.set("w", live.detach());
  state.set("note", std::string("text values are copied too"));
  state.set_int("step", 7);
  return state;
}

at::Tensor mebibytes(double mib) {
  return torch::randn({static_cast<int64_t>(mib * (1 << 20) / 4)}, torch::kFloat32);
}

// Runs `call` on another thread; `returned()` tells whether it has returned yet.
class Background {
 public:
  explicit Background(std::function<void()> call)
      : thread_([this, call = std::move(call)] {
          call();
          returned_ = true;
        }) {}
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }
  bool returned() const { return returned_; }
  void join() { thread_.join(); }

 private:
  std::atomic<bool> returned_{false};
  std::thread thread_;
};

std::vector<std::shared_ptr<Writer>> async_writers(const SaveFunction& savefun) {
  return {std::make_shared<ThreadWriter>(savefun),
          std::make_shared<QueueWriter>(int64_t{64} << 20, savefun)};
}

TEST(AsyncWriter, FileHoldsTheStateOfTheCallNotTheTensorsChangedAfterIt) {
  TempDir dir;
  Gate gate;
  for (auto& writer : async_writers(gate.savefun())) {
    at::Tensor live = mebibytes(1);
    const at::Tensor at_call = live.clone();
    const std::string path = dir / "snapshot";
    writer->write(path, aliasing_state(live), nullptr);
    live.add_(1);  // the next optimizer step, while the write has not even begun
    gate.open();
    writer->finalize();
    const StateDict saved = torch_loadfun()(path);
    EXPECT_TRUE(same_tensor(saved.tensor("w"), at_call));
    EXPECT_FALSE(saved.tensor("w").equal(live));
    EXPECT_EQ(saved.text("note"), "text values are copied too");
    EXPECT_EQ(saved.get_int("step"), 7);
  }
}

// The same through the snapshot extension of a real training: every parameter and Adam
// moment changes in the steps right after the snapshot, before its file is written.
TEST(AsyncWriter, SnapshotOfATrainingHoldsOneStep) {
  TempDir dir;
  Gate gate;
  Training training(dir / "out");
  training.hook->extend(snapshot(SnapshotOptions()
                                     .writer(std::make_shared<ThreadWriter>(gate.savefun()))
                                     .filename("snap_{iteration}")),
                        ExtendOptions().trigger({3, iteration}));
  training.steps(3);
  StateDict at_snapshot;
  for (const auto& entry : training.hook->state_dict()) {
    if (const auto* tensor = std::get_if<at::Tensor>(&entry.second)) {
      at_snapshot.set(entry.first, tensor->clone());
    }
  }
  training.steps(2);  // changes every parameter and moment while the write waits
  gate.open();
  training.hook->finalize();
  const StateDict saved = without_metadata(read_snapshot(dir / "out/snap_3"));
  int compared = 0;
  for (const auto& entry : at_snapshot) {
    if (entry.first.rfind("models/", 0) != 0 && entry.first.rfind("optimizers/", 0) != 0) {
      continue;
    }
    const at::Tensor& expected = std::get<at::Tensor>(entry.second);
    EXPECT_TRUE(same_tensor(saved.tensor(entry.first), expected)) << entry.first;
    if (expected.is_floating_point() && expected.numel() > 1) {
      EXPECT_FALSE(saved.tensor(entry.first).equal(training.hook->state_dict().tensor(entry.first)))
          << entry.first << " did not change after the snapshot: the test proves nothing";
    }
    ++compared;
  }
  EXPECT_GE(compared, 8);
}

TEST(ThreadWriter, KeepsOneWriteInFlightAndReusesItsBuffer) {
  TempDir dir;
  Gate gate;
  ThreadWriter writer(gate.savefun());
  at::Tensor live = mebibytes(1);
  writer.write(dir / "first", aliasing_state(live), nullptr);
  gate.wait_entered(1);
  Background second([&] { writer.write(dir / "second", aliasing_state(live), nullptr); });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(second.returned()) << "the second snapshot did not wait for the first";
  gate.open();
  second.join();
  writer.write(dir / "third", aliasing_state(live), nullptr);
  writer.finalize();
  EXPECT_EQ(gate.entered(), 3);
  EXPECT_EQ(gate.max_running(), 1);
  ASSERT_EQ(gate.data_pointers().size(), 3u);
  EXPECT_EQ(gate.data_pointers()[0], gate.data_pointers()[1]);
  EXPECT_EQ(gate.data_pointers()[1], gate.data_pointers()[2]);
  EXPECT_NE(gate.data_pointers()[0], live.data_ptr());
  for (const char* name : {"first", "second", "third"}) EXPECT_TRUE(fs::exists(dir / name));
}

TEST(QueueWriter, QueuesUpToMaxBytesThenTheCallerWaits) {
  TempDir dir;
  Gate gate;
  const int64_t mib = int64_t{1} << 20;
  QueueWriter writer(5 * mib / 2, gate.savefun());  // room for two snapshots of 1 MiB
  at::Tensor live = mebibytes(1);
  std::vector<std::string> committed;
  std::mutex committed_mutex;
  auto record = [&](const std::string& name) {
    return [&, name] {
      std::lock_guard<std::mutex> lock(committed_mutex);
      committed.push_back(name);
    };
  };
  writer.write(dir / "1", aliasing_state(live), record("1"));
  writer.write(dir / "2", aliasing_state(live), record("2"));  // queued: 2 MiB <= 2.5 MiB
  Background third([&] { writer.write(dir / "3", aliasing_state(live), record("3")); });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(third.returned()) << "3 MiB were queued with max_bytes 2.5 MiB";
  EXPECT_EQ(gate.entered(), 1);
  gate.open();
  third.join();
  writer.finalize();
  EXPECT_EQ(committed, (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(gate.max_running(), 1);
}

TEST(QueueWriter, ASnapshotLargerThanTheBoundGoesAlone) {
  TempDir dir;
  Gate gate;
  QueueWriter writer(1024, gate.savefun());
  at::Tensor live = mebibytes(1);
  writer.write(dir / "1", aliasing_state(live), nullptr);  // an empty queue takes it
  gate.wait_entered(1);
  Background second([&] { writer.write(dir / "2", aliasing_state(live), nullptr); });
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(second.returned());
  gate.open();
  second.join();
  writer.finalize();
  EXPECT_TRUE(fs::exists(dir / "1") && fs::exists(dir / "2"));
}

TEST(QueueWriter, RefusesANonPositiveBound) {
  try {
    QueueWriter writer(0);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "QueueWriter: max_bytes must be > 0, got 0");
  }
  EXPECT_THROW(ThreadWriter{SaveFunction()}, Error);
}

// A savefun that fails on the calls listed, with "disk on fire <call>".
SaveFunction failing_on(std::vector<int> failing) {
  auto calls = std::make_shared<int>(0);
  return [calls, failing](const std::string& path, const StateDict& state) {
    const int call = ++*calls;
    if (std::find(failing.begin(), failing.end(), call) != failing.end()) {
      throw std::runtime_error("disk on fire " + std::to_string(call));
    }
    torch_savefun()(path, state);
  };
}

// ThreadWriter's next write waits for the previous one, so it sees its error for certain.
// (QueueWriter's raises it at whichever later write or finalize comes after the failure.)
TEST(ThreadWriter, ABackgroundErrorIsRaisedByTheNextWriteWithTheFileAndTheCause) {
  TempDir dir;
  {
    auto writer = std::make_unique<ThreadWriter>(failing_on({1}));
    at::Tensor live = mebibytes(0.01);
    writer->write(dir / "a", aliasing_state(live), nullptr);  // fails in the background
    try {
      writer->write(dir / "b", aliasing_state(live), nullptr);
      FAIL() << "the error of the first write was lost";
    } catch (const Error& error) {
      EXPECT_THAT(error.what(), ::testing::HasSubstr("a background write failed"));
      EXPECT_THAT(error.what(), ::testing::HasSubstr(dir / "a"));
      EXPECT_THAT(error.what(), ::testing::HasSubstr("disk on fire 1"));
      try {
        std::rethrow_if_nested(error);
        FAIL() << "no nested cause";
      } catch (const std::runtime_error& cause) {
        EXPECT_STREQ(cause.what(), "disk on fire 1");
      }
    }
    // Raised once; the next snapshot is written.
    writer->write(dir / "c", aliasing_state(live), nullptr);
    EXPECT_NO_THROW(writer->finalize());
    EXPECT_FALSE(fs::exists(dir / "a"));
    EXPECT_TRUE(fs::exists(dir / "c"));
    for (const auto& entry : fs::directory_iterator(dir.path())) {
      EXPECT_FALSE(is_temp_file_name(entry.path().filename().string())) << entry.path();
    }
  }
}

TEST(AsyncWriter, FinalizeRaisesEveryPendingErrorOnce) {
  TempDir dir;
  // The writes fail only once all three are queued: a failure before a write would be raised
  // by that write (as it should), not by finalize.
  Gate gate;
  QueueWriter writer(int64_t{64} << 20, gate.savefun(failing_on({1, 3})));
  at::Tensor live = mebibytes(0.01);
  for (const char* name : {"a", "b", "c"}) writer.write(dir / name, aliasing_state(live), nullptr);
  gate.open();
  try {
    writer.finalize();
    FAIL() << "the errors were lost";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), ::testing::HasSubstr("disk on fire 1"));
    EXPECT_THAT(error.what(), ::testing::HasSubstr("disk on fire 3"));
  }
  EXPECT_TRUE(fs::exists(dir / "b"));  // a failure does not stop later writes
  EXPECT_NO_THROW(writer.finalize());
}

TEST(AsyncWriter, AnErrorNeverRaisedIsWarnedAboutAtDestruction) {
  TempDir dir;
  CapturedWarnings warnings;
  {
    ThreadWriter writer(failing_on({1}));
    writer.write(dir / "a", aliasing_state(mebibytes(0.01)), nullptr);
  }
  EXPECT_TRUE(warnings.contains("never raised")) << ::testing::PrintToString(warnings.messages());
  EXPECT_TRUE(warnings.contains("disk on fire 1"));
}

TEST(AsyncWriter, FinalizeWaitsForTheCommitAndItsCallback) {
  TempDir dir;
  Gate gate;
  for (auto& writer : async_writers(gate.savefun())) {
    std::atomic<bool> committed{false};
    std::atomic<bool> file_there_at_commit{false};
    std::thread::id commit_thread;
    const std::string path = dir / "waited";
    writer->write(path, aliasing_state(mebibytes(1)), [&] {
      file_there_at_commit = fs::exists(path);
      commit_thread = std::this_thread::get_id();
      committed = true;
    });
    std::thread opener([&] {
      std::this_thread::sleep_for(kSettle);
      gate.open();
    });
    writer->finalize();
    EXPECT_TRUE(committed);
    EXPECT_TRUE(file_there_at_commit) << "committed ran before the file was in place";
    EXPECT_NE(commit_thread, std::this_thread::get_id());
    opener.join();
    fs::remove(path);
  }
}

TEST(AsyncWriter, RetentionRunsAfterTheBackgroundCommit) {
  for (const char* kind : {"thread", "queue"}) {
    TempDir dir;
    Training training(dir / "out");
    std::shared_ptr<Writer> writer;
    if (std::string(kind) == "thread") {
      writer = std::make_shared<ThreadWriter>(npz_savefun());
    } else {
      writer = std::make_shared<QueueWriter>(int64_t{1} << 20, npz_savefun());
    }
    training.hook->extend(snapshot(SnapshotOptions().writer(writer).n_retains(2)),
                          ExtendOptions().trigger({1, iteration}));
    training.steps(5);
    training.hook->finalize();
    EXPECT_EQ(files_in(dir / "out"),
              (std::vector<std::string>{"snapshot_iter_4", "snapshot_iter_5"}))
        << kind;
    EXPECT_EQ(read_snapshot(dir / "out/snapshot_iter_5").get_int("tth/iteration"), 5);
  }
}

TEST(AsyncWriter, ErrorOfTheLastSnapshotFailsTheTrainingAtFinalize) {
  TempDir dir;
  Training training(dir / "out");
  training.hook->extend(
      snapshot(SnapshotOptions().writer(std::make_shared<ThreadWriter>(failing_on({2})))),
      ExtendOptions().trigger({1, iteration}));
  training.steps(2);
  EXPECT_THROW(training.hook->finalize(), Error);
  EXPECT_TRUE(fs::exists(dir / "out/snapshot_iter_1"));
  EXPECT_FALSE(fs::exists(dir / "out/snapshot_iter_2"));
}

// Contiguous tensors are copied with memcpy, the others with at::copy_: both give the values.
TEST(AsyncWriter, CopiesStridedViewsAndLazyConjugatesByValue) {
  TempDir dir;
  ThreadWriter writer(npz_savefun());
  at::Tensor base = torch::arange(12, torch::kFloat64).reshape({3, 4});
  at::Tensor complex = torch::complex(torch::randn({5}), torch::randn({5}));
  StateDict state;
  state.set("transposed", base.t());
  state.set("column", base.select(1, 2));
  state.set("conjugate", complex.conj());
  state.set("negated", torch::imag(complex.conj()));
  state.set("empty", torch::zeros({0, 3}));
  std::map<std::string, at::Tensor> expected;
  for (const auto& entry : state) {
    expected[entry.first] = std::get<at::Tensor>(entry.second).resolve_conj().resolve_neg().clone();
  }
  writer.write(dir / "views.npz", state, nullptr);
  base.zero_();
  complex.zero_();
  writer.finalize();
  const StateDict saved = read_npz(dir / "views.npz");
  for (const auto& [key, value] : expected) {
    EXPECT_TRUE(same_tensor(saved.tensor(key), value)) << key;
  }
}

TEST(AsyncWriter, WritesAStateOfEmptyTensorsOnly) {
  TempDir dir;
  ThreadWriter writer(npz_savefun());
  StateDict state;
  state.set("empty", torch::zeros({0, 4}, torch::kFloat64));
  writer.write(dir / "empty.npz", state, nullptr);
  writer.finalize();
  EXPECT_TRUE(same_tensor(read_npz(dir / "empty.npz").tensor("empty"), state.tensor("empty")));
}

// A savefun that keeps a tensor of the state it was given: the buffer behind that tensor
// must not be reused (and overwritten) by the next snapshot.
TEST(ThreadWriter, DoesNotReuseABufferSomeoneKeptAViewOf) {
  TempDir dir;
  std::vector<at::Tensor> kept;
  ThreadWriter writer([&kept](const std::string& path, const StateDict& state) {
    kept.push_back(state.tensor("w"));
    torch_savefun()(path, state);
  });
  at::Tensor live = torch::full({1024}, 1.0f);
  writer.write(dir / "first", aliasing_state(live), nullptr);
  writer.finalize();
  live.fill_(2.0f);
  writer.write(dir / "second", aliasing_state(live), nullptr);
  writer.finalize();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_TRUE(kept[0].eq(1.0f).all().item<bool>()) << "the second snapshot overwrote the first";
  EXPECT_TRUE(kept[1].eq(2.0f).all().item<bool>());
}

TEST(AsyncWriter, CopiesGpuTensorsIntoHostMemory) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
  TempDir dir;
  ThreadWriter writer;
  at::Tensor live = mebibytes(1).cuda();
  const at::Tensor at_call = live.cpu();
  writer.write(dir / "gpu", aliasing_state(live), nullptr);
  live.add_(1);
  writer.finalize();
  EXPECT_TRUE(same_tensor(torch_loadfun()(dir / "gpu").tensor("w"), at_call));
}

}  // namespace
}  // namespace tth
