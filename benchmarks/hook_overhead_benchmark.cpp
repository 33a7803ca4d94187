// What the extension protocol costs a training loop per iteration: an empty step run bare,
// through TorchTrainerHook with no extension, and with N extensions that fire every
// iteration and read a reported value. Compare against the time of a real step (a small MLP's
// forward+backward+SGD step, measured here too) to see the overhead in proportion.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "tth/tth.h"

namespace {

void BM_BareStep(benchmark::State& state) {
  int64_t counter = 0;
  std::function<void()> step = [&] { benchmark::DoNotOptimize(++counter); };
  for (auto _ : state) step();
}
BENCHMARK(BM_BareStep);

void BM_HookIteration(benchmark::State& state) {
  tth::TorchTrainerHook hook{tth::HookOptions(100)};
  double sink = 0;
  for (int64_t i = 0; i < state.range(0); ++i) {
    hook.extend(tth::make_extension(
        [&](tth::TorchTrainerHook& h) { sink += h.observation().at("main/loss").value(); }));
  }
  for (auto _ : state) hook.run_iteration([] { tth::report("main/loss", 1.0); });
  benchmark::DoNotOptimize(sink);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HookIteration)->Arg(0)->Arg(1)->Arg(8);

// A real (small) training step, for proportion: 784-128-10 MLP, batch 64, SGD.
void BM_SmallMlpStep(benchmark::State& state) {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(784, 128), torch::nn::ReLU(),
                              torch::nn::Linear(128, 10));
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01));
  auto x = torch::randn({64, 784});
  auto y = torch::randint(10, {64}, torch::kLong);
  for (auto _ : state) {
    optimizer.zero_grad();
    auto loss = torch::cross_entropy_loss(model->forward(x), y);
    loss.backward();
    optimizer.step();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SmallMlpStep);

// FailOnNonNumber every iteration on the parameters and gradients of the MNIST example's CNN
// (225,034 numbers in 8 tensors, each checked twice): what the check adds to its ~25 ms step.
void BM_FailOnNonNumberCnn(benchmark::State& state) {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3)),
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3)),
                              torch::nn::Linear(1600, 128), torch::nn::Linear(128, 10));
  for (auto& parameter : model->parameters())
    parameter.mutable_grad() = torch::randn_like(parameter);
  tth::TorchTrainerHook hook{tth::HookOptions(100)};
  hook.add_model("main", model.ptr());
  hook.extend(std::make_shared<tth::FailOnNonNumber>());
  for (auto _ : state) hook.run_iteration([] {});
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FailOnNonNumberCnn);

}  // namespace

BENCHMARK_MAIN();
