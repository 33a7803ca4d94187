// A consumer of the library: trains a linear model for two epochs with one extension of its
// own, a LogReport and a PlotReport (whose PLplot the static library must bring along).
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "tth/tth.h"

int main() {
  torch::nn::Linear model(2, 1);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  tth::TorchTrainerHook hook(tth::HookOptions(5).stop_trigger({2, tth::epoch}));
  hook.add_model("main", model);
  int epochs = 0;
  hook.extend(tth::make_extension([&](tth::TorchTrainerHook&) { ++epochs; }), "count",
              {1, tth::epoch});
  hook.extend(std::make_shared<tth::LogReport>());
  hook.extend(std::make_shared<tth::PlotReport>(std::vector<std::string>{"main/loss"},
                                                tth::PlotReportOptions().filename("loss.svg")));
  while (!hook.done()) {
    hook.run_iteration([&] {
      auto x = torch::randn({4, 2});
      auto loss = (model->forward(x) - x.sum(1, true)).pow(2).mean();
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      tth::report("main/loss", loss);
    });
  }
  std::cout << "consumer: " << hook.iteration() << " iterations, " << epochs << " epochs\n";
  const bool plotted = std::ifstream(hook.out() + "/loss.svg").good();
  return hook.iteration() == 10 && epochs == 2 && plotted ? 0 : 1;
}
