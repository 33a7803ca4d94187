// What a resume costs in memory: the peak resident memory that autoload adds above a process
// that already holds its model and optimizer, as a multiple of the state it loads.
//
//   resume_memory save DIR PARAM_MIB [torch|npz]    trains one Adam step, snapshots, exits
//   resume_memory resume DIR PARAM_MIB [torch|npz]  builds the same model, autoloads, reports
//
// The state is the parameters (PARAM_MIB) plus Adam's two moments: 3 x PARAM_MIB. `resume`
// reads VmRSS before autoload, resets the peak (VmHWM, through /proc/self/clear_refs), and
// prints one JSON line: {"format", "state_mib", "peak_above_mib", "ratio"}. Run each mode in
// a fresh process, as a real restart is (benchmarks/run.sh does).
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <string>

#include "bench_support.h"
#include "tth/tth.h"

namespace {

using bench::reset_peak;
using bench::status_mib;

constexpr int64_t kWidth = 1024;  // each layer: kWidth x kWidth floats, 4 MiB

struct Setup {
  Setup(const std::string& dir, int64_t param_mib, const std::string& format) {
    torch::manual_seed(0);
    for (int64_t i = 0; i < param_mib / 4; ++i) {
      model->push_back(torch::nn::Linear(torch::nn::LinearOptions(kWidth, kWidth).bias(false)));
    }
    optimizer = std::make_shared<torch::optim::Adam>(model->parameters());
    hook = std::make_unique<tth::TorchTrainerHook>(tth::HookOptions(10).out(dir));
    hook->add_model("main", model.ptr());
    hook->add_optimizer("main", optimizer);
    auto options = tth::SnapshotOptions().autoload(true).filename("snapshot_{iteration}");
    if (format == "npz") options.savefun(tth::npz_savefun());
    hook->extend(tth::snapshot(options), "snapshot", {1, tth::iteration});
  }
  torch::nn::Sequential model;
  std::shared_ptr<torch::optim::Adam> optimizer;
  std::unique_ptr<tth::TorchTrainerHook> hook;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: resume_memory save|resume DIR PARAM_MIB [torch|npz]\n";
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  const int64_t param_mib = std::stoll(argv[3]);
  const std::string format = argc > 4 ? argv[4] : "torch";
  try {
    Setup setup(dir, param_mib, format);
    if (mode == "save") {
      setup.hook->run_iteration([&] {
        setup.optimizer->zero_grad();
        setup.model->forward(torch::ones({1, kWidth})).sum().backward();
        setup.optimizer->step();
      });
      setup.hook->finalize();
      return 0;
    }
    const double before = status_mib("VmRSS");
    reset_peak();
    setup.hook->start();  // the resume phase: autoload
    const double peak_above = status_mib("VmHWM") - before;
    const double state_mib = 3.0 * static_cast<double>(param_mib / 4 * 4);
    std::cout << "{\"format\": \"" << format << "\", \"state_mib\": " << state_mib
              << ", \"peak_above_mib\": " << peak_above << ", \"ratio\": " << peak_above / state_mib
              << "}" << std::endl;
    return setup.hook->iteration() == 1 ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "resume_memory: " << error.what() << '\n';
    return 1;
  }
}
