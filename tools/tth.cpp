// tth: inspect and verify snapshot files.
//
//   tth inspect FILE       format, format version, iteration, then every key with its dtype,
//                          shape and size in bytes
//   tth verify FILE...     checks each file's container (every CRC-32, streamed), structure
//                          and metadata without loading its values (tth::verify_snapshot);
//                          prints "ok FILE" or the first problem, exits 1 if any file fails
//   tth convert IN OUT [--to npz|torch]
//                          rewrites a snapshot in the other format (default: the one IN is
//                          not in), atomically; refuses an OUT that is not a regular file, and
//                          removes the temp files an interrupted convert left in OUT's
//                          directory unless a training run holds that directory's lock
//
// Exit codes: 0 success, 1 a file failed, 2 bad usage.
#include <fmt/format.h>

#include <iostream>
#include <string>
#include <vector>

#include "tth/atomic_file.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/npz.h"
#include "tth/snapshot_file.h"

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
  const tth::FileFormat format = tth::verify_file(path);
  const tth::StateDict state = tth::read_snapshot(path);
  fmt::print("file: {}\nformat: {}\nversion: {}\niteration: {}\n", path, tth::to_string(format),
             state.get_int(tth::kFormatVersionKey),
             state.contains(tth::kIterationKey) ? state.get_int(tth::kIterationKey) : -1);
  size_t total = 0;
  fmt::print("{:<60} {:<8} {:<16} {:>12}\n", "key", "dtype", "shape", "bytes");
  for (const auto& [key, value] : tth::without_metadata(state)) {
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      const size_t bytes = tensor->numel() * tensor->element_size();
      total += bytes;
      fmt::print("{:<60} {:<8} {:<16} {:>12}\n", key, c10::toString(tensor->scalar_type()),
                 fmt::format("({})", fmt::join(tensor->sizes(), ", ")), bytes);
    } else {
      const auto& text = std::get<std::string>(value);
      total += text.size();
      fmt::print("{:<60} {:<8} {:<16} {:>12}\n", key, "text", "", text.size());
    }
  }
  fmt::print("total: {} bytes in {} entries\n", total, tth::without_metadata(state).size());
  return 0;
}

int verify(const std::vector<std::string>& paths) {
  int status = 0;
  for (const std::string& path : paths) {
    try {
      tth::verify_snapshot(path);  // reads no value but the metadata: bounded memory
      fmt::print("ok {}\n", path);
    } catch (const tth::Error& error) {
      fmt::print(stderr, "FAILED {}: {}\n", path, error.what());
      status = kFailed;
    }
  }
  return status;
}

int convert(const std::string& in, const std::string& out, std::string to) {
  // Checked before reading IN, which may be large.
  if (!to.empty() && to != "npz" && to != "torch") {
    std::cerr << "tth convert: --to must be npz or torch, got '" << to << "'\n";
    return usage();
  }
  const tth::FileFormat format = tth::verify_file(in);
  const tth::StateDict state = tth::read_snapshot(in);
  if (to.empty()) to = format == tth::FileFormat::kNpz ? "torch" : "npz";
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
  }
  return usage();
}
