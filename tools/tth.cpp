// tth: look at, check and convert weights files of every kind (tth/weights_file.h): our
// snapshots (LibTorch archive or npz), any npz (numpy, Chainer), TorchScript archives and
// Python torch.save files.
//
//   tth inspect FILE       the file's kind (a snapshot's format version and iteration too),
//                          then every entry with its dtype, shape and size in bytes; None
//                          attributes of TorchScript modules are listed as None
//   tth verify FILE...     checks each file's container (every CRC-32, streamed), an archive's
//                          structure and a snapshot's metadata without loading its values;
//                          prints "ok FILE (kind)" or the first problem, exits 1 if any fails
//   tth convert IN OUT [--to npz|torch]
//                          rewrites IN as an npz or a LibTorch archive with the StateDict's
//                          '/'-joined keys (default: npz, or a LibTorch archive for an npz),
//                          atomically; refuses an OUT that is not a regular file, and removes
//                          the temp files an interrupted convert left in OUT's directory
//                          unless a training run holds that directory's lock
//
// Exit codes: 0 success, 1 a file failed, 2 bad usage.
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "tth/atomic_file.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/npz.h"
#include "tth/snapshot_file.h"
#include "tth/weights_file.h"

namespace {

constexpr int kFailed = 1;
constexpr int kUsage = 2;

int usage() {
  std::cerr << "usage: tth inspect FILE\n"
               "       tth verify FILE...\n"
               "       tth convert IN OUT [--to npz|torch]\n";
  return kUsage;
}

int inspect(const std::string& path) {
  const tth::WeightsInfo info = tth::inspect_weights(path);
  fmt::print("file: {}\nformat: {}\n", path, tth::to_string(info.format));
  if (info.format_version) fmt::print("version: {}\n", *info.format_version);
  if (info.format_version) fmt::print("iteration: {}\n", info.iteration.value_or(-1));
  const std::string metadata = "tth/";
  uint64_t total = 0;
  size_t count = 0;
  fmt::print("{:<60} {:<8} {:<16} {:>12}\n", "key", "dtype", "shape", "bytes");
  for (const tth::WeightsEntry& entry : info.entries) {
    if (info.format_version && entry.key.compare(0, metadata.size(), metadata) == 0) continue;
    const bool shaped = entry.dtype != "text" && entry.dtype != "None";
    fmt::print("{:<60} {:<8} {:<16} {:>12}\n", entry.key, entry.dtype,
               shaped ? fmt::format("({})", fmt::join(entry.shape, ", ")) : "", entry.bytes);
    if (__builtin_add_overflow(total, entry.bytes, &total)) total = UINT64_MAX;  // saturated
    ++count;
  }
  fmt::print("total: {} bytes in {} entries\n", total, count);
  return 0;
}

int verify(const std::vector<std::string>& paths) {
  int status = 0;
  for (const std::string& path : paths) {
    try {
      // Reads no value but a snapshot's metadata: bounded memory.
      const tth::WeightsFormat format = tth::verify_weights(path);
      fmt::print("ok {} ({})\n", path, tth::to_string(format));
    } catch (const tth::Error& error) {
      fmt::print(stderr, "FAILED {}: {}\n", path, error.what());
      status = kFailed;
    }
  }
  return status;
}

// The bytes `state` takes written out, saturated: a view of a small storage (a stride-0 expand
// in a hostile file) may describe far more than the file holds, and the output materializes it.
uint64_t output_bytes(const tth::StateDict& state) {
  uint64_t total = 0;
  for (const auto& [key, value] : state) {
    uint64_t bytes = 0;
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      bytes = tensor->element_size();
      for (int64_t size : tensor->sizes()) {
        if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(size), &bytes)) return UINT64_MAX;
      }
    } else {
      bytes = std::get<std::string>(value).size();
    }
    if (__builtin_add_overflow(total, bytes, &total)) return UINT64_MAX;
  }
  return total;
}

int convert(const std::string& in, const std::string& out, std::string to) {
  // Checked before reading IN, which may be large.
  if (!to.empty() && to != "npz" && to != "torch") {
    std::cerr << "tth convert: --to must be npz or torch, got '" << to << "'\n";
    return usage();
  }
  const tth::WeightsFormat format = tth::detect_weights_format(in);
  const tth::StateDict state = tth::read_weights(in);
  const bool npz = format == tth::WeightsFormat::kNpz || format == tth::WeightsFormat::kSnapshotNpz;
  if (to.empty()) to = npz ? "torch" : "npz";
  const std::filesystem::path directory = std::filesystem::path(out).parent_path();
  const uint64_t needed = output_bytes(state);
  std::error_code error;  // no free-space figure (an odd file system): the write decides
  const uint64_t available =
      std::filesystem::space(directory.empty() ? "." : directory, error).available;
  if (!error && needed > available) {
    std::cerr << fmt::format(
        "tth: convert: '{}' holds {} bytes of values, more than the {} bytes free for '{}'\n", in,
        needed, available, out);
    return kFailed;
  }
  const tth::SaveFunction savefun = to == "npz" ? tth::npz_savefun() : tth::torch_savefun();
  const std::vector<std::string> removed =
      tth::atomic_write_standalone(out, [&](const std::string& temp) { savefun(temp, state); });
  for (const std::string& path : removed) {
    tth::warn(fmt::format("convert: removed '{}' left by an interrupted write", path));
  }
  fmt::print("{} ({}) -> {} ({}), {} entries\n", in, tth::to_string(format), out,
             to == "npz" ? "npz" : "LibTorch archive", state.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 2) return usage();
  try {
    if (args[0] == "inspect" && args.size() == 2) return inspect(args[1]);
    if (args[0] == "verify") return verify({args.begin() + 1, args.end()});
    if (args[0] == "convert" && args.size() == 3) return convert(args[1], args[2], "");
    if (args[0] == "convert" && args.size() == 5 && args[3] == "--to") {
      return convert(args[1], args[2], args[4]);
    }
  } catch (const tth::Error& error) {
    std::cerr << "tth: " << error.what() << '\n';
    return kFailed;
  } catch (const std::exception& error) {  // LibTorch's, the file system's, memory
    std::cerr << "tth: " << error.what() << '\n';
    return kFailed;
  }
  return usage();
}
