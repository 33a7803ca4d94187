// What a snapshot costs against the floor set by the hardware, at state sizes of 64, 256 and
// 1024 MiB (the argument of every benchmark, in MiB):
//   BM_Memcpy               the state's bytes copied into a buffer allocated and touched
//                           beforehand: the memory floor, and what an asynchronous writer's
//                           stall is measured against;
//   BM_RawWriteFsync        the same bytes written to a file and fsynced: the disk floor;
//   BM_NpzSnapshot, BM_NpzDeflateSnapshot (level 1), BM_TorchSnapshot
//                           a savefun through tth::atomic_write (temp file, fsync, rename,
//                           directory fsync), as SimpleWriter commits a snapshot;
//   BM_NpzRead              an npz file read back (from the page cache: parsing, CRC-32 and
//                           copying, not the disk);
//   BM_ThreadWriterStall, BM_QueueWriterStall
//                           the time the calling thread is blocked in write() of a
//                           ThreadWriter, or of a QueueWriter bounded to two states, with the
//                           previous write finished (finalize() runs untimed before each write):
//                           the copy of the state, which is all an asynchronous snapshot costs
//                           the training thread.
//
// The state is 4 MiB float32 tensors with model-like keys and random values (what deflate
// sees in real weights), built once per size. Files go to $TTH_BENCH_DIR, else to a fresh
// directory under /var/tmp (not /tmp, which may be a tmpfs where fsync is free), and are removed
// outside the timed region. Environment: TTH_BENCH_SIZES (MiB, comma or space separated;
// default "64,256,1024"), TTH_BENCH_ITERATIONS (iterations of every benchmark; default fewer
// for larger states: a 1 GiB write takes seconds); --benchmark_filter selects benchmarks.
// fsync makes every iteration slow and noisy: compare ratios within one run (benchmarks/run.sh
// prints them), not absolute numbers across runs or machines. With repetitions, a "min"
// aggregate gives the best repetition, the least disturbed on a shared machine.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.h"
#include "tth/async_writer.h"
#include "tth/tth.h"

namespace {

using bench::kMiB;
using bench::kTensorBytes;
using bench::make_state;
constexpr char kDefaultSizes[] = "64,256,1024";

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

// The state of `mib` MiB, built on first use and kept for the other benchmarks of that size.
const tth::StateDict& cached_state(int64_t mib) {
  static std::map<int64_t, tth::StateDict> states;
  auto it = states.find(mib);
  if (it == states.end()) it = states.emplace(mib, make_state(mib)).first;
  return it->second;
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

// A file name unique to the benchmark and size, so that no two share one.
std::string file_name(const char* stem, int64_t mib, const char* extension) {
  return std::string(stem) + "_" + std::to_string(mib) + extension;
}

void BM_Memcpy(benchmark::State& state) {
  const tth::StateDict& dict = cached_state(state.range(0));
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

// open, write every tensor's bytes, fsync, close: the disk floor any durable savefun pays.
void BM_RawWriteFsync(benchmark::State& state) {
  const tth::StateDict& dict = cached_state(state.range(0));
  const std::string path = bench_dir().file(file_name("raw", state.range(0), ".bin"));
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

// One snapshot through the commit path every savefun uses (SimpleWriter's).
void snapshot_loop(benchmark::State& state, const tth::SaveFunction& savefun, const char* stem,
                   const char* extension) {
  const tth::StateDict& dict = cached_state(state.range(0));
  const std::string path = bench_dir().file(file_name(stem, state.range(0), extension));
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
  snapshot_loop(state, tth::npz_savefun(), "snapshot", ".npz");
}

// Bytes processed are the uncompressed bytes, so throughputs compare across formats.
void BM_NpzDeflateSnapshot(benchmark::State& state) {
  snapshot_loop(
      state,
      tth::npz_savefun(tth::NpzOptions().compression(tth::NpzCompression::kDeflate).level(1)),
      "snapshot_deflate", ".npz");
}

void BM_TorchSnapshot(benchmark::State& state) {
  snapshot_loop(state, tth::torch_savefun(), "snapshot", ".pt");
}

void BM_NpzRead(benchmark::State& state) {
  const tth::StateDict& dict = cached_state(state.range(0));
  const std::string path = bench_dir().file(file_name("read", state.range(0), ".npz"));
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

// The time write() blocks the caller, each time with the writer idle: finalize(), the removal
// of the file and the (shallow) copy of the StateDict that write() takes by value run untimed,
// as a snapshot builds its StateDict before it calls write(). One untimed write first lets the
// writer allocate and touch its buffers, which it then reuses from one snapshot to the next.
void writer_stall_loop(benchmark::State& state, tth::Writer& writer, const char* stem) {
  const tth::StateDict& dict = cached_state(state.range(0));
  const std::string path = bench_dir().file(file_name(stem, state.range(0), ".npz"));
  const std::function<void()> committed = [] {};
  try {
    writer.write(path, dict, committed);
    writer.finalize();
    std::filesystem::remove(path);
    for (auto _ : state) {
      state.PauseTiming();
      writer.finalize();
      std::filesystem::remove(path);
      tth::StateDict handed = dict;
      state.ResumeTiming();
      writer.write(path, std::move(handed), committed);
    }
    writer.finalize();
  } catch (const std::exception& error) {
    state.SkipWithError(error.what());
  }
  std::filesystem::remove(path);
  state.SetBytesProcessed(state.iterations() * state_bytes(dict));
}

void BM_ThreadWriterStall(benchmark::State& state) {
  tth::ThreadWriter writer(tth::npz_savefun());
  writer_stall_loop(state, writer, "thread_writer");
}

void BM_QueueWriterStall(benchmark::State& state) {
  tth::QueueWriter writer(2 * state_bytes(cached_state(state.range(0))), tth::npz_savefun());
  writer_stall_loop(state, writer, "queue_writer");
}

// The best of the repetitions: on a shared machine, the least disturbed one.
double min_of(const std::vector<double>& values) {
  return *std::min_element(values.begin(), values.end());
}

// State sizes in MiB from TTH_BENCH_SIZES; each a positive multiple of the 4 MiB tensors.
std::vector<int64_t> sizes() {
  const char* given = std::getenv("TTH_BENCH_SIZES");
  std::string text = given != nullptr && *given != '\0' ? given : kDefaultSizes;
  for (char& c : text) {
    if (c == ',') c = ' ';
  }
  std::istringstream in(text);
  std::vector<int64_t> result;
  for (std::string word; in >> word;) {
    const int64_t mib = std::stoll(word);
    if (mib <= 0 || mib * kMiB % kTensorBytes != 0) {
      throw std::invalid_argument("TTH_BENCH_SIZES: " + word +
                                  " is not a positive multiple of 4 (MiB)");
    }
    result.push_back(mib);
  }
  return result;
}

// Few iterations: every one writes the whole state durably. Deflate is about ten times slower.
int64_t iterations(int64_t mib, bool slow) {
  if (const char* given = std::getenv("TTH_BENCH_ITERATIONS"); given != nullptr && *given != '\0')
    return std::stoll(given);
  const int64_t count = mib <= 64 ? 5 : mib <= 256 ? 3 : 2;
  return slow ? (count + 1) / 2 : count;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  struct Entry {
    const char* name;
    void (*function)(benchmark::State&);
    bool slow;
  };
  const Entry entries[] = {
      {"BM_Memcpy", BM_Memcpy, false},
      {"BM_RawWriteFsync", BM_RawWriteFsync, false},
      {"BM_NpzSnapshot", BM_NpzSnapshot, false},
      {"BM_NpzDeflateSnapshot", BM_NpzDeflateSnapshot, true},
      {"BM_TorchSnapshot", BM_TorchSnapshot, false},
      {"BM_NpzRead", BM_NpzRead, false},
      {"BM_ThreadWriterStall", BM_ThreadWriterStall, false},
      {"BM_QueueWriterStall", BM_QueueWriterStall, false},
  };
  try {
    // Registered size by size, so that the rows of one size run side by side.
    for (const int64_t mib : sizes()) {
      for (const Entry& entry : entries) {
        benchmark::RegisterBenchmark(entry.name, entry.function)
            ->Arg(mib)
            ->Iterations(iterations(mib, entry.slow))
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->ComputeStatistics("min", min_of);
      }
    }
  } catch (const std::exception& error) {
    std::cerr << "snapshot_benchmark: " << error.what() << '\n';
    return 2;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
