// A training process for the snapshot tests, run as a separate process so that resuming
// happens in a fresh process and crashes can be real SIGKILLs.
//
//   snapshot_child train --out DIR --result FILE --optimizer adam|sgd --iterations N
//                        --snapshot-at K [--stop-at S] [--savefun torch|npz]
//       Trains N iterations (or stops at S), taking a snapshot at K and resuming from the
//       newest snapshot in DIR if any. Writes the losses of the iterations it ran and its
//       final state (without the elapsed time) to FILE.
//   snapshot_child crash-loop --out DIR
//       Snapshots every iteration forever (n_retains 3); prints "ready" after the first.
//   snapshot_child start --out DIR
//       As crash-loop, but runs one iteration (autoload, temp clean-up, a snapshot) and exits.
//   snapshot_child hold --out DIR
//       Two iterations with a snapshot each (n_retains 1). The second snapshot's savefun, once
//       it has written the temp file, prints "writing <temp path>" and waits for a line on
//       stdin before it returns, so that the test holds a run with a write in flight.
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include "tth/tth.h"

namespace {

std::map<std::string, std::string> parse(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 2; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  return args;
}

std::string get(const std::map<std::string, std::string>& args, const std::string& key,
                const std::string& fallback = "") {
  auto found = args.find(key);
  if (found != args.end()) return found->second;
  if (fallback.empty()) throw std::runtime_error("missing argument " + key);
  return fallback;
}

int train(const std::map<std::string, std::string>& args) {
  const int64_t iterations = std::stoll(get(args, "--iterations"));
  const int64_t stop_at = std::stoll(get(args, "--stop-at", "0"));
  const double snapshot_at = std::stod(get(args, "--snapshot-at"));
  const std::string out = get(args, "--out");

  torch::manual_seed(0);
  const int64_t n = 96, batch = 16;
  auto inputs = torch::randn({n, 6});
  auto targets = inputs.matmul(torch::randn({6, 3})).argmax(1);

  torch::nn::Sequential model(torch::nn::Linear(6, 16), torch::nn::ReLU(), torch::nn::Dropout(0.3),
                              torch::nn::Linear(16, 3));
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  if (get(args, "--optimizer") == "adam") {
    optimizer =
        std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.01));
  } else {
    optimizer = std::make_shared<torch::optim::SGD>(model->parameters(),
                                                    torch::optim::SGDOptions(0.05).momentum(0.9));
  }
  auto scheduler = std::make_shared<torch::optim::StepLR>(*optimizer, 3, 0.5);
  auto sampler = std::make_shared<torch::data::samplers::RandomSampler>(n);

  tth::TorchTrainerHook hook(tth::HookOptions(n / batch)
                                 .stop_trigger({stop_at > 0 ? stop_at : iterations, tth::iteration})
                                 .out(out));
  hook.add_model("main", model);
  hook.add_optimizer("main", optimizer);
  hook.add_scheduler("main", scheduler);
  hook.add_state("sampler", tth::archive_state(sampler));
  hook.extend(tth::make_extension([&](tth::TorchTrainerHook&) { scheduler->step(); }),
              "lr_schedule", {1, tth::epoch}, tth::priority::kEditor);
  tth::SnapshotOptions options;
  options.autoload(true);
  if (get(args, "--savefun", "torch") == "npz") options.savefun(tth::npz_savefun());
  hook.extend(tth::snapshot(options),
              tth::ExtendOptions().trigger(std::make_shared<tth::ManualScheduleTrigger>(
                  std::vector<double>{snapshot_at}, tth::iteration)));

  std::vector<float> losses;
  while (!hook.done()) {
    auto indices = sampler->next(batch);
    if (!indices) {
      sampler->reset();
      continue;
    }
    auto index = torch::tensor(std::vector<int64_t>(indices->begin(), indices->end()));
    hook.run_iteration([&] {
      model->train();
      optimizer->zero_grad();
      auto loss = torch::cross_entropy_loss(model->forward(inputs.index_select(0, index)),
                                            targets.index_select(0, index));
      loss.backward();
      optimizer->step();
      losses.push_back(loss.item<float>());
    });
  }
  tth::StateDict result = hook.state_dict();
  result.erase("manager/elapsed_time");
  result.set("losses", torch::tensor(losses));
  tth::torch_savefun()(get(args, "--result"), result);
  return 0;
}

// Snapshots every iteration; with `forever`, trains until killed, else one iteration.
int crash_loop(const std::map<std::string, std::string>& args, bool forever) {
  torch::manual_seed(0);
  // About 4 MB of parameters, so that a write takes long enough to be interrupted.
  torch::nn::Sequential model(torch::nn::Linear(1024, 512), torch::nn::Linear(512, 1024));
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
  tth::TorchTrainerHook hook(tth::HookOptions(10).out(get(args, "--out")));
  hook.add_model("main", model);
  hook.add_optimizer("main", optimizer);
  auto snap = tth::snapshot(tth::SnapshotOptions().autoload(true).n_retains(3));
  hook.extend(snap, tth::ExtendOptions().trigger({1, tth::iteration}));
  hook.extend(tth::make_extension([](tth::TorchTrainerHook& h) {
                std::cout << "ready " << h.iteration() << std::endl;
              }),
              "announce", {1, tth::iteration}, -200);
  do {
    hook.run_iteration([&] {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.add_(0.001);
    });
  } while (forever);
  std::cout << "loaded " << snap->loaded_path().value_or("nothing") << std::endl;
  return 0;
}

// Holds a snapshot write in flight until stdin says go on (see the header comment).
int hold(const std::map<std::string, std::string>& args) {
  // crash-loop's model, optimizer and extensions, so that `start` resumes from these snapshots.
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(1024, 512), torch::nn::Linear(512, 1024));
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
  tth::TorchTrainerHook hook(tth::HookOptions(10).out(get(args, "--out")));
  hook.add_model("main", model);
  hook.add_optimizer("main", optimizer);
  int saves = 0;
  tth::SaveFunction pausing = [&saves](const std::string& temp, const tth::StateDict& state) {
    tth::torch_savefun()(temp, state);
    if (++saves < 2) return;
    std::cout << "writing " << temp << std::endl;
    std::string line;
    std::getline(std::cin, line);
  };
  hook.extend(tth::snapshot(tth::SnapshotOptions().savefun(pausing).autoload(true).n_retains(1)),
              tth::ExtendOptions().trigger({1, tth::iteration}));
  hook.extend(tth::make_extension([](tth::TorchTrainerHook&) {}), "announce", {1, tth::iteration},
              -200);
  for (int i = 0; i < 2; ++i) hook.run_iteration([] {});
  hook.finalize();
  std::cout << "done" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string mode = argv[1];
  const auto args = parse(argc, argv);
  try {
    if (mode == "train") return train(args);
    if (mode == "crash-loop") return crash_loop(args, /*forever=*/true);
    if (mode == "start") return crash_loop(args, /*forever=*/false);
    if (mode == "hold") return hold(args);
  } catch (const std::exception& error) {
    std::cerr << "snapshot_child: " << error.what() << '\n';
    return 1;
  }
  return 2;
}
