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

}  // namespace

BENCHMARK_MAIN();
