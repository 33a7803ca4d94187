// What a snapshot costs in memory: the peak resident memory that writing snapshots adds above
// a process that already holds the training state, for each writer and savefun.
//
//   snapshot_memory WRITER SAVEFUN STATE_MIB DIR
//     WRITER   simple | thread | queue (QueueWriter bounded to two states)
//     SAVEFUN  torch | npz | deflate (npz, deflate level 1)
//
// Builds a state of STATE_MIB MiB (4 MiB float32 tensors, random values, as
// snapshot_benchmark's), creates the writer, reads VmRSS, resets the peak (VmHWM, through
// /proc/self/clear_refs), then writes two snapshots back to back into DIR (write, write,
// finalize: the second write() of a ThreadWriter waits for the first and reuses its buffers; a
// QueueWriter may hold both copies) and prints one JSON line: {"writer", "savefun",
// "state_mib", "peak_above_mib", "ratio"} (ratio: peak above / state). The files are removed.
// Run each case in a fresh process, so that no earlier case's heap is reused
// (benchmarks/run.sh does). What to expect: a SimpleWriter adds about one chunk of the
// savefun's (npz streams tensors from their memory), a ThreadWriter one copy of the state, a
// QueueWriter at most two.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "bench_support.h"
#include "tth/async_writer.h"
#include "tth/tth.h"

namespace {

using bench::reset_peak;
using bench::status_mib;

using bench::kMiB;
using bench::kTensorBytes;
using bench::make_state;
constexpr int kSnapshots = 2;

tth::SaveFunction make_savefun(const std::string& name) {
  if (name == "torch") return tth::torch_savefun();
  if (name == "npz") return tth::npz_savefun();
  if (name == "deflate") {
    return tth::npz_savefun(tth::NpzOptions().compression(tth::NpzCompression::kDeflate).level(1));
  }
  throw std::invalid_argument("SAVEFUN must be torch, npz or deflate, got '" + name + "'");
}

std::unique_ptr<tth::Writer> make_writer(const std::string& name, tth::SaveFunction savefun,
                                         int64_t state_bytes) {
  if (name == "simple") return std::make_unique<tth::SimpleWriter>(std::move(savefun));
  if (name == "thread") return std::make_unique<tth::ThreadWriter>(std::move(savefun));
  if (name == "queue")
    return std::make_unique<tth::QueueWriter>(2 * state_bytes, std::move(savefun));
  throw std::invalid_argument("WRITER must be simple, thread or queue, got '" + name + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: snapshot_memory simple|thread|queue torch|npz|deflate STATE_MIB DIR\n";
    return 2;
  }
  const std::string writer_name = argv[1], savefun_name = argv[2], dir = argv[4];
  try {
    const int64_t mib = std::stoll(argv[3]);
    if (mib <= 0 || mib % (kTensorBytes / kMiB) != 0) {
      throw std::invalid_argument("STATE_MIB must be a positive multiple of 4, got " +
                                  std::string(argv[3]));
    }
    std::filesystem::create_directories(dir);
    const tth::StateDict state = make_state(mib);
    auto writer = make_writer(writer_name, make_savefun(savefun_name), mib * kMiB);
    const double before = status_mib("VmRSS");
    reset_peak();
    for (int i = 0; i < kSnapshots; ++i) {
      const std::string path =
          (std::filesystem::path(dir) / ("snapshot_" + std::to_string(i))).string();
      writer->write(path, state, [] {});
    }
    writer->finalize();
    const double peak_above = status_mib("VmHWM") - before;
    for (int i = 0; i < kSnapshots; ++i) {
      std::filesystem::remove(std::filesystem::path(dir) / ("snapshot_" + std::to_string(i)));
    }
    std::cout << "{\"writer\": \"" << writer_name << "\", \"savefun\": \"" << savefun_name
              << "\", \"state_mib\": " << mib << ", \"peak_above_mib\": " << peak_above
              << ", \"ratio\": " << peak_above / static_cast<double>(mib) << "}" << std::endl;
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "snapshot_memory: " << error.what() << '\n';
    return 1;
  }
}
