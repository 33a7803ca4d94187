// A training process for the snapshot tests, run as a separate process so that resuming
// happens in a fresh process and crashes can be real SIGKILLs.
//
//   snapshot_child train --out DIR --result FILE --optimizer adam|sgd --iterations N
//                        --snapshot-at K [--stop-at S] [--savefun torch|npz]
//       Trains N iterations (or stops at S), taking a snapshot at K and resuming from the
//       newest snapshot in DIR if any. Writes the losses of the iterations it ran and its
//       final state (without the elapsed time) to FILE.
//   snapshot_child crash-loop --out DIR [--writer simple|thread|queue]
//       Snapshots every iteration forever (n_retains 3) with that writer (default simple);
//       prints "ready" after the first.
//   snapshot_child start --out DIR [--writer simple|thread|queue]
//       As crash-loop, but runs one iteration (autoload, temp clean-up, a snapshot) and exits.
//   snapshot_child hold --out DIR
//       Two iterations with a snapshot each (n_retains 1). The second snapshot's savefun, once
//       it has written the temp file, prints "writing <temp path>" and waits for a line on
//       stdin before it returns, so that the test holds a run with a write in flight.
//   snapshot_child signal --out DIR [--writer simple|thread|queue] [--slow-save MS]
//                         [--iterations N]
//       crash-loop's model with tth::save_on_signal() (SIGTERM, SIGUSR1) and a snapshot that
//       saves only on a signal (autoload on). Prints "start K" once started (K: the iteration
//       it resumed at), "iteration I" after each iteration (about 5 ms each), and at the end
//       "stopped at I by signal" or, when the stop trigger {N (default 2000), iteration} ended
//       it, "stopped at I by trigger". With --slow-save, the savefun prints "saving <temp
//       path>" once it has written the temp file and waits MS before the commit, or less if a
//       line arrives on stdin first (so a test can send a signal during the save, then let it
//       go on, without guessing times).
#include <poll.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include "tth/save_on_signal.h"
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

std::shared_ptr<tth::Writer> make_writer(const std::string& kind) {
  if (kind == "thread") return std::make_shared<tth::ThreadWriter>();
  if (kind == "queue") return std::make_shared<tth::QueueWriter>(int64_t{64} << 20);
  if (kind == "simple") return std::make_shared<tth::SimpleWriter>();
  throw std::runtime_error("unknown writer " + kind);
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
  tth::SnapshotOptions options;
  options.autoload(true).n_retains(3).writer(make_writer(get(args, "--writer", "simple")));
  auto snap = tth::snapshot(options);
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

// Trains until a signal (see the header comment); the only snapshots are the signal's.
int signal_loop(const std::map<std::string, std::string>& args) {
  // crash-loop's model and optimizer.
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(1024, 512), torch::nn::Linear(512, 1024));
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
  const int64_t iterations = std::stoll(get(args, "--iterations", "2000"));
  tth::TorchTrainerHook hook(
      tth::HookOptions(10).out(get(args, "--out")).stop_trigger({iterations, tth::iteration}));
  hook.add_model("main", model);
  hook.add_optimizer("main", optimizer);
  const int slow_ms = std::stoi(get(args, "--slow-save", "0"));
  tth::SaveFunction savefun = [slow_ms](const std::string& temp, const tth::StateDict& state) {
    tth::torch_savefun()(temp, state);
    if (slow_ms <= 0) return;
    std::cout << "saving " << temp << std::endl;
    pollfd input{STDIN_FILENO, POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(slow_ms);
    for (auto now = std::chrono::steady_clock::now(); now < deadline;
         now = std::chrono::steady_clock::now()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      if (::poll(&input, 1, static_cast<int>(left.count()) + 1) > 0) break;  // EINTR: poll again
    }
    char line[256];
    if (input.revents != 0) (void)::read(STDIN_FILENO, line, sizeof line);
  };
  const std::string kind = get(args, "--writer", "simple");
  std::shared_ptr<tth::Writer> writer;
  if (kind == "thread") {
    writer = std::make_shared<tth::ThreadWriter>(savefun);
  } else if (kind == "queue") {
    writer = std::make_shared<tth::QueueWriter>(int64_t{64} << 20, savefun);
  } else if (kind == "simple") {
    writer = std::make_shared<tth::SimpleWriter>(savefun);
  } else {
    throw std::runtime_error("unknown writer " + kind);
  }
  hook.extend(tth::snapshot(tth::SnapshotOptions().writer(writer).autoload(true)),
              tth::ExtendOptions().trigger(tth::TriggerRef::never()));
  hook.extend(tth::make_extension([](tth::TorchTrainerHook& h) {
                std::cout << "iteration " << h.iteration() << std::endl;
              }),
              "announce", {1, tth::iteration});
  hook.extend(tth::save_on_signal());
  hook.start();
  std::cout << "start " << hook.iteration() << std::endl;
  while (!hook.done()) {
    hook.run_iteration([&] {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.add_(0.001);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
  }
  std::cout << "stopped at " << hook.iteration()
            << (hook.iteration() < iterations ? " by signal" : " by trigger") << std::endl;
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
    if (mode == "signal") return signal_loop(args);
  } catch (const std::exception& error) {
    std::cerr << "snapshot_child: " << error.what() << '\n';
    return 1;
  }
  return 2;
}
