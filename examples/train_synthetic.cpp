// Example: attach TorchTrainerHook to a plain LibTorch training loop.
//
// The model learns a 3-class problem from synthetic data. The loop is ordinary LibTorch code;
// the hook adds, without changing it:
//   * a stop trigger (train for --epochs epochs),
//   * an extension written as a class (per-epoch mean loss, with state that a resume keeps),
//   * a one-line extension made from a lambda (print progress every epoch),
//   * a trigger that fires on a new best loss (MinValueTrigger),
//   * a snapshot of the whole training state every 5 epochs, loaded again on the next start
//     (run it twice with a larger --epochs: the second run continues where the first ended),
//   * a final report written by the extension's finalize.
//
// Usage: train_synthetic [--epochs N] [--out DIR]
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "tth/tth.h"

namespace {

// An extension as a class: averages "main/loss" over each epoch and reports the mean as
// "epoch/loss", so that triggers and later extensions can read it.
class EpochLoss : public tth::Extension {
 public:
  void operator()(tth::TorchTrainerHook& hook) override {
    // Called every iteration (default trigger): accumulate.
    mean_.add(hook.observation(), "main/loss");
    if (hook.is_new_epoch()) {
      last_ = mean_.take("main/loss", "EpochLoss");
      tth::report("epoch/loss", last_);
      history_.push_back(last_);
    }
  }
  // Runs exactly once at the end, even when training fails.
  void finalize(tth::TorchTrainerHook& hook) override {
    std::ofstream summary(hook.out() + "/summary.txt");
    for (size_t i = 0; i < history_.size(); ++i) {
      summary << "epoch " << i + 1 << " loss " << history_[i] << '\n';
    }
  }
  // A writer: it reports values that lower-priority extensions and triggers read.
  int default_priority() const override { return tth::priority::kWriter; }

  // The running mean survives a resume in the middle of an epoch.
  tth::StateDict state_dict() const override { return mean_.state_dict(); }
  void load_state_dict(const tth::StateDict& state) override { mean_.load_state_dict(state); }

  double last() const { return last_; }

 private:
  tth::RunningMean mean_;
  double last_ = 0;
  std::vector<double> history_;
};

}  // namespace

// The whole program; main adds the error handling.
int train(int argc, char** argv) {
  int epochs = 20;
  std::string out = "result";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--epochs") epochs = std::atoi(argv[i + 1]);
    if (flag == "--out") out = argv[i + 1];
  }

  // Synthetic data: labels are the argmax of a fixed random projection.
  torch::manual_seed(0);
  const int64_t n = 1024, batch_size = 64;
  auto inputs = torch::randn({n, 8});
  auto labels = inputs.matmul(torch::randn({8, 3})).argmax(1);

  torch::nn::Sequential model(torch::nn::Linear(8, 32), torch::nn::ReLU(),
                              torch::nn::Linear(32, 3));
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(),
                                                       torch::optim::SGDOptions(0.2).momentum(0.9));

  // The manager: 16 iterations per epoch, stop after `epochs` epochs.
  tth::TorchTrainerHook hook(
      tth::HookOptions(n / batch_size).stop_trigger({epochs, tth::epoch}).out(out));
  hook.add_model("main", model);          // parameters and buffers join hook.state_dict()
  hook.add_optimizer("main", optimizer);  // so do momentum buffers and the learning rate

  auto epoch_loss = std::make_shared<EpochLoss>();
  hook.extend(epoch_loss);
  hook.extend(tth::make_extension([](tth::TorchTrainerHook& h) {
                std::cout << "epoch " << h.epoch() << "  iteration " << h.iteration() << "  loss "
                          << h.observation().at("epoch/loss").value() << "  (" << h.elapsed_time()
                          << " s)\n";
              }),
              tth::ExtendOptions().name("progress").trigger({1, tth::epoch}));
  hook.extend(tth::make_extension([](tth::TorchTrainerHook& h) {
                std::cout << "  new best loss at epoch " << h.epoch() << '\n';
              }),
              tth::ExtendOptions().name("best").trigger(
                  std::make_shared<tth::MinValueTrigger>("epoch/loss")));

  // Whole-state snapshots every 5 epochs, keeping the newest 2; autoload resumes from the
  // newest one that verifies when the program starts again.
  hook.extend(tth::snapshot(tth::SnapshotOptions().autoload(true).n_retains(2)),
              tth::ExtendOptions().trigger({5, tth::epoch}));

  // The user's own loop: only run_iteration is new. done() also starts training, so a
  // resumed run knows its iteration before the loop body runs.
  while (!hook.done()) {
    auto order = torch::randperm(n);
    for (int64_t start = 0; start < n && !hook.done(); start += batch_size) {
      auto index = order.slice(0, start, start + batch_size);
      hook.run_iteration([&] {
        optimizer->zero_grad();
        auto loss = torch::cross_entropy_loss(model->forward(inputs.index_select(0, index)),
                                              labels.index_select(0, index));
        loss.backward();
        optimizer->step();
        tth::report("main/loss", loss);
      });
    }
  }
  std::cout << "done: " << hook.iteration() << " iterations, final epoch loss "
            << epoch_loss->last() << ", summary in " << out << "/summary.txt\n";
  return 0;
}

// Every failure (an --out that is a file, an output directory another run holds, a snapshot
// that does not fit the model) is a std::exception: report it and exit 1 instead of letting
// std::terminate abort the program.
int main(int argc, char** argv) {
  try {
    return train(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "train_synthetic: " << error.what() << '\n';
    return 1;
  }
}
