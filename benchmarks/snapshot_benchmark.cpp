// What a snapshot costs against the floor set by the hardware: the same bytes copied in
// memory, written raw and fsynced, then written by each savefun through tth::atomic_write
// (temp file, fsync, rename, directory fsync), and an npz file read back.
//
// The state is 64 MiB of float32 (16 tensors of 4 MiB, random values, built once); the deflate
// savefun gets 16 MiB, as it is about a tenth as fast. Files go to $TTH_BENCH_DIR, else to a
// fresh directory under /var/tmp (not /tmp, which may be a tmpfs where fsync is free), and are
// removed after every iteration outside the timed region. fsync makes every iteration slow and
// noisy: few iterations, wall-clock time, and compare ratios within one run (benchmarks/run.sh
// prints them), not absolute numbers across runs or machines.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "tth/tth.h"

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kTensorBytes = 4 * kMiB;
constexpr int64_t kStateMiB = 64;
constexpr int64_t kDeflateStateMiB = 16;
constexpr int64_t kIterations = 5;

// The directory the benchmarks write into; one made here is removed at exit.
class BenchDir {
 public:
  BenchDir() {
    if (const char* given = std::getenv("TTH_BENCH_DIR"); given != nullptr && *given != '\0') {
      path_ = given;
      std::filesystem::create_directories(path_);
      return;
    }
    std::string pattern = "/var/tmp/tth-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp '" + pattern + "': " + std::strerror(errno));
    }
    path_ = pattern;
    owned_ = true;
  }
  ~BenchDir() {
    std::error_code ignored;
    if (owned_) std::filesystem::remove_all(path_, ignored);
  }
  BenchDir(const BenchDir&) = delete;
  BenchDir& operator=(const BenchDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
  bool owned_ = false;
};

const BenchDir& bench_dir() {
  static const BenchDir dir;
  return dir;
}

// `mib` MiB of float32 as 4 MiB tensors with model-like keys; random values, so that deflate
// sees what real weights give it.
tth::StateDict make_state(int64_t mib) {
  torch::manual_seed(0);
  tth::StateDict state;
  constexpr int64_t kElements = kTensorBytes / static_cast<int64_t>(sizeof(float));
  for (int64_t i = 0; i < mib * kMiB / kTensorBytes; ++i) {
    state.set("models/main/layers/" + std::to_string(i) + "/weight",
              torch::randn({kElements / 1024, 1024}, torch::kFloat32));
  }
  return state;
}

const tth::StateDict& state_64() {
  static const tth::StateDict state = make_state(kStateMiB);
  return state;
}

const tth::StateDict& state_16() {
  static const tth::StateDict state = make_state(kDeflateStateMiB);
  return state;
}

int64_t state_bytes(const tth::StateDict& state) {
  int64_t bytes = 0;
  for (const auto& [key, value] : state) {
    bytes += static_cast<int64_t>(std::get<at::Tensor>(value).nbytes());
  }
  return bytes;
}

// Writes all of `data`, retrying short writes; false with errno set on failure.
bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += written;
    size -= static_cast<std::size_t>(written);
  }
  return true;
}

void remove_untimed(benchmark::State& state, const std::string& path) {
  state.PauseTiming();
  std::filesystem::remove(path);
  state.ResumeTiming();
}

// The same bytes copied into a buffer allocated and touched beforehand: the memory floor.
void BM_Memcpy(benchmark::State& state) {
  const tth::StateDict& dict = state_64();
  std::vector<char> buffer(static_cast<std::size_t>(state_bytes(dict)), 1);
  for (auto _ : state) {
    char* out = buffer.data();
    for (const auto& [key, value] : dict) {
      const at::Tensor& tensor = std::get<at::Tensor>(value);
      std::memcpy(out, tensor.data_ptr(), tensor.nbytes());
      out += tensor.nbytes();
    }
    benchmark::DoNotOptimize(buffer.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state_bytes(dict));
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kIterations);

// open, write every tensor's bytes, fsync, close: the disk floor any durable savefun pays.
void BM_RawWriteFsync(benchmark::State& state) {
  const tth::StateDict& dict = state_64();
  const std::string path = bench_dir().file("raw.bin");
  for (auto _ : state) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    bool ok = fd >= 0;
    for (auto it = dict.begin(); ok && it != dict.end(); ++it) {
      const at::Tensor& tensor = std::get<at::Tensor>(it->second);
      ok = write_all(fd, static_cast<const char*>(tensor.data_ptr()), tensor.nbytes());
    }
    ok = ok && ::fsync(fd) == 0;
    if (fd >= 0) ok = ::close(fd) == 0 && ok;
    if (!ok) {
      state.SkipWithError(("write '" + path + "': " + std::strerror(errno)).c_str());
      break;
    }
    remove_untimed(state, path);
  }
  state.SetBytesProcessed(state.iterations() * state_bytes(dict));
}
BENCHMARK(BM_RawWriteFsync)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kIterations);

// One snapshot through the commit path every savefun uses.
void snapshot_loop(benchmark::State& state, const tth::SaveFunction& savefun,
                   const tth::StateDict& dict, const std::string& name) {
  const std::string path = bench_dir().file(name);
  for (auto _ : state) {
    try {
      tth::atomic_write(path, [&](const std::string& temp) { savefun(temp, dict); });
    } catch (const std::exception& error) {
      state.SkipWithError(error.what());
      break;
    }
    remove_untimed(state, path);
  }
  state.SetBytesProcessed(state.iterations() * state_bytes(dict));
}

void BM_NpzSnapshot(benchmark::State& state) {
  snapshot_loop(state, tth::npz_savefun(), state_64(), "snapshot.npz");
}
BENCHMARK(BM_NpzSnapshot)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kIterations);

// Bytes processed are the uncompressed bytes: compare per byte (run.sh does).
void BM_NpzDeflateSnapshot(benchmark::State& state) {
  snapshot_loop(
      state,
      tth::npz_savefun(tth::NpzOptions().compression(tth::NpzCompression::kDeflate).level(1)),
      state_16(), "snapshot_deflate.npz");
}
BENCHMARK(BM_NpzDeflateSnapshot)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(kIterations);

void BM_TorchSnapshot(benchmark::State& state) {
  snapshot_loop(state, tth::torch_savefun(), state_64(), "snapshot.pt");
}
BENCHMARK(BM_TorchSnapshot)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kIterations);

// Reading back a stored npz file (from the page cache: parsing, CRC-32 and copying, not disk).
void BM_NpzRead(benchmark::State& state) {
  const tth::StateDict& dict = state_64();
  const std::string path = bench_dir().file("read.npz");
  try {
    tth::atomic_write(path, [&](const std::string& temp) { tth::npz_savefun()(temp, dict); });
  } catch (const std::exception& error) {
    state.SkipWithError(error.what());
    return;
  }
  for (auto _ : state) {
    try {
      const tth::StateDict loaded = tth::read_npz(path);
      benchmark::DoNotOptimize(loaded.size());
    } catch (const std::exception& error) {
      state.SkipWithError(error.what());
      break;
    }
  }
  std::filesystem::remove(path);
  state.SetBytesProcessed(state.iterations() * state_bytes(dict));
}
BENCHMARK(BM_NpzRead)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kIterations);

}  // namespace

BENCHMARK_MAIN();
