// What periodic snapshots cost a training loop: the same small MLP (784-1024-1024-10, 1.9 M
// parameters; with Adam's two moments a state of about 21 MiB) trained through a
// TorchTrainerHook on one fixed batch, reporting training iterations per second:
//   BM_TrainNoSnapshot            no snapshot extension: the rate to compare against;
//   BM_TrainSimpleWriter          tth::snapshot with a SimpleWriter every K iterations: the
//                                 training thread writes and fsyncs each snapshot;
//   BM_TrainThreadWriter          the same with a ThreadWriter: the training thread copies the
//                                 state, a background thread writes it;
//   BM_TrainThreadWriterPipelined a prototype (PipelinedWriter below) whose background thread
//                                 also does the copy, while the next iteration's forward and
//                                 backward run; training waits for the copy only before the
//                                 optimizer step, the first thing that changes the state.
// Every snapshot is the whole training state in the default format (torch_savefun), kept with
// n_retains(2), in a fresh directory under $TTH_BENCH_DIR, else /var/tmp (not /tmp, which may
// be a tmpfs where fsync is free).
//
// One benchmark iteration is K training iterations; K/2 untimed iterations run first, so that
// each snapshot falls in the middle of a timed block and its background write ends inside the
// timed run. The last block includes hook.finalize(), which waits for pending writes. K is
// chosen so that a synchronous snapshot costs a visible fraction of the run (10-20% on the
// development machine). Environment: TTH_TRAIN_SNAPSHOT_EVERY (K, default 40),
// TTH_TRAIN_BLOCKS (timed blocks per run, default 8). Compare the rates within one run
// (benchmarks/run.sh interleaves the repetitions and prints the ratios). A "min" aggregate
// gives the best repetition (in time per block), the least disturbed on a shared machine.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tth/async_writer.h"
#include "tth/tth.h"

namespace {

constexpr int64_t kBatch = 64;
constexpr int64_t kInputs = 784;
constexpr int64_t kHidden = 1024;
constexpr int64_t kClasses = 10;
constexpr int64_t kDefaultSnapshotEvery = 40;
constexpr int64_t kDefaultBlocks = 8;

int64_t env_int(const char* name, int64_t fallback) {
  const char* given = std::getenv(name);
  if (given == nullptr || *given == '\0') return fallback;
  const int64_t value = std::stoll(given);
  if (value <= 0) throw std::invalid_argument(std::string(name) + " must be > 0, got " + given);
  return value;
}

int64_t snapshot_every() { return env_int("TTH_TRAIN_SNAPSHOT_EVERY", kDefaultSnapshotEvery); }
int64_t blocks() { return env_int("TTH_TRAIN_BLOCKS", kDefaultBlocks); }

// MEASUREMENT PROTOTYPE of CheckFreq's "pipelined copy" (Mohan et al., FAST '21), not library
// code: it measures the best case for pipelining against the plain ThreadWriter, to decide
// whether the library should get it. write() does not copy on the calling thread: it hands the
// state, whose tensors alias the live parameters and optimizer state, to a background thread
// that copies it into buffers reused from one snapshot to the next, then saves the copy
// through atomic_write. The caller must call wait_copied() before anything changes those
// tensors; in this benchmark's loop that is only optimizer.step() (the model has no
// BatchNorm, whose running statistics change in forward). Nothing enforces that contract,
// which is why this is a prototype. At most one write is in flight, as with ThreadWriter.
class PipelinedWriter : public tth::Writer {
 public:
  explicit PipelinedWriter(tth::SaveFunction savefun)
      : savefun_(std::move(savefun)), thread_([this] { run(); }) {}
  ~PipelinedWriter() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  PipelinedWriter(const PipelinedWriter&) = delete;
  PipelinedWriter& operator=(const PipelinedWriter&) = delete;

  void write(const std::string& path, tth::StateDict state,
             const std::function<void()>& committed) override {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !job_; });
    rethrow_pending(lock);
    job_.emplace(Job{path, std::move(state), committed});
    copied_ = false;
    changed_.notify_all();
  }

  /// Blocks until the state of the last write() has been copied.
  void wait_copied() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return copied_; });
  }

  void finalize() override {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !job_; });
    rethrow_pending(lock);
  }

 private:
  struct Job {
    std::string path;
    tth::StateDict state;
    std::function<void()> committed;
  };

  void rethrow_pending(std::unique_lock<std::mutex>& lock) {
    (void)lock;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

  // The state with every tensor copied into this writer's buffers (allocated on first use).
  tth::StateDict copy(const tth::StateDict& state) {
    tth::StateDict result;
    for (const auto& [key, value] : state) {
      const auto* tensor = std::get_if<at::Tensor>(&value);
      if (tensor == nullptr) {
        result.set(key, value);
        continue;
      }
      at::Tensor& buffer = buffers_[key];
      if (!buffer.defined() || buffer.sizes() != tensor->sizes() ||
          buffer.scalar_type() != tensor->scalar_type()) {
        buffer = at::empty(tensor->sizes(), tensor->options().device(at::kCPU));
      }
      if (tensor->is_cpu() && tensor->is_contiguous()) {
        if (tensor->nbytes() > 0)
          std::memcpy(buffer.data_ptr(), tensor->data_ptr(), buffer.nbytes());
      } else {
        buffer.copy_(*tensor);
      }
      result.set(key, buffer);
    }
    return result;
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      changed_.wait(lock, [&] { return stop_ || (job_ && !copied_); });
      if (!job_) return;  // stopping, nothing pending
      Job& job = *job_;
      lock.unlock();
      std::exception_ptr error;
      std::optional<tth::StateDict> copied;
      try {
        copied = copy(job.state);
      } catch (...) {
        error = std::current_exception();
      }
      job.state = tth::StateDict();  // drops the aliases of the live tensors
      lock.lock();
      copied_ = true;
      changed_.notify_all();
      lock.unlock();
      if (!error) {
        try {
          tth::atomic_write(job.path, [&](const std::string& temp) { savefun_(temp, *copied); });
          job.committed();
        } catch (...) {
          error = std::current_exception();
        }
      }
      lock.lock();
      if (error && !error_) error_ = error;
      job_.reset();
      changed_.notify_all();
    }
  }

  tth::SaveFunction savefun_;
  std::unordered_map<std::string, at::Tensor> buffers_;  // background thread only
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Job> job_;  // the write in flight
  bool copied_ = true;      // the state of job_ (if any) has been copied
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after everything it uses
};

// A fresh directory for one training run's snapshots, removed with it.
class RunDir {
 public:
  RunDir() {
    const char* given = std::getenv("TTH_BENCH_DIR");
    const std::string base = given != nullptr && *given != '\0' ? given : "/var/tmp";
    std::filesystem::create_directories(base);
    std::string pattern = base + "/tth-train-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp '" + pattern + "': " + std::strerror(errno));
    }
    path_ = pattern;
  }
  ~RunDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The model, its optimizer and the hook, with a snapshot every `every` iterations through
// `writer` (none when null).
struct TrainingRun {
  TrainingRun(const std::shared_ptr<tth::Writer>& writer, int64_t every) {
    torch::manual_seed(0);
    model = torch::nn::Sequential(torch::nn::Linear(kInputs, kHidden), torch::nn::ReLU(),
                                  torch::nn::Linear(kHidden, kHidden), torch::nn::ReLU(),
                                  torch::nn::Linear(kHidden, kClasses));
    optimizer =
        std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(1e-3));
    inputs = torch::randn({kBatch, kInputs});
    targets = torch::randint(kClasses, {kBatch}, torch::kLong);
    hook = std::make_unique<tth::TorchTrainerHook>(tth::HookOptions(1000).out(dir.path()));
    hook->add_model("main", model.ptr());
    hook->add_optimizer("main", optimizer);
    if (writer) {
      hook->extend(tth::snapshot(tth::SnapshotOptions().writer(writer).n_retains(2)),
                   tth::ExtendOptions().trigger({static_cast<double>(every), tth::iteration}));
    }
  }

  // One training iteration; `before_update` runs right before the optimizer step.
  void iteration(const std::function<void()>& before_update) {
    hook->run_iteration([&] {
      optimizer->zero_grad();
      const at::Tensor loss = torch::cross_entropy_loss(model->forward(inputs), targets);
      loss.backward();
      before_update();
      optimizer->step();
    });
  }

  RunDir dir;  // first: outlives the hook, which holds its lock
  torch::nn::Sequential model{nullptr};
  std::shared_ptr<torch::optim::Adam> optimizer;
  at::Tensor inputs, targets;
  std::unique_ptr<tth::TorchTrainerHook> hook;
};

void train_loop(benchmark::State& state, const std::shared_ptr<tth::Writer>& writer,
                const std::function<void()>& before_update) {
  const int64_t every = snapshot_every();
  try {
    TrainingRun run(writer, every);
    for (int64_t i = 0; i < every / 2; ++i) run.iteration(before_update);
    int64_t block = 0;
    for (auto _ : state) {
      for (int64_t i = 0; i < every; ++i) run.iteration(before_update);
      if (++block == state.max_iterations) run.hook->finalize();
    }
  } catch (const std::exception& error) {
    state.SkipWithError(error.what());
  }
  state.SetItemsProcessed(state.iterations() * every);
  state.counters["snapshot_every"] = static_cast<double>(every);
  // LibTorch's intra-op threads: whether a core is left for a background writer.
  state.counters["torch_threads"] = at::get_num_threads();
}

void nothing() {}

void BM_TrainNoSnapshot(benchmark::State& state) { train_loop(state, nullptr, nothing); }

void BM_TrainSimpleWriter(benchmark::State& state) {
  train_loop(state, std::make_shared<tth::SimpleWriter>(tth::torch_savefun()), nothing);
}

void BM_TrainThreadWriter(benchmark::State& state) {
  train_loop(state, std::make_shared<tth::ThreadWriter>(tth::torch_savefun()), nothing);
}

void BM_TrainThreadWriterPipelined(benchmark::State& state) {
  const auto writer = std::make_shared<PipelinedWriter>(tth::torch_savefun());
  train_loop(state, writer, [&writer] { writer->wait_copied(); });
}

// The best of the repetitions: on a shared machine, the least disturbed one.
double min_of(const std::vector<double>& values) {
  return *std::min_element(values.begin(), values.end());
}

#define TTH_TRAIN_BENCHMARK(function) \
  BENCHMARK(function)                 \
      ->Unit(benchmark::kMillisecond) \
      ->UseRealTime()                 \
      ->Iterations(blocks())          \
      ->ComputeStatistics("min", min_of)

TTH_TRAIN_BENCHMARK(BM_TrainNoSnapshot);
TTH_TRAIN_BENCHMARK(BM_TrainSimpleWriter);
TTH_TRAIN_BENCHMARK(BM_TrainThreadWriter);
TTH_TRAIN_BENCHMARK(BM_TrainThreadWriterPipelined);

}  // namespace

BENCHMARK_MAIN();
