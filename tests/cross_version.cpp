// Snapshots across LibTorch versions, run by scripts/test-libtorch2.sh with one build against
// each version:
//
//   cross_version write DIR   trains a small setup a few steps (two models, SGD with momentum
//                             and a StepLR, Adam, a shuffled BatchIterator, the random
//                             generator) and writes its whole training state with both
//                             savefuns (DIR/state.torch, DIR/state.npz), beside a dump of that
//                             state (DIR/state.txt: every key, dtype, shape and byte)
//   cross_version check DIR   builds the same setup untrained, loads each snapshot into it and
//                             compares its state with the dump, to the byte
//   cross_version version     prints LibTorch's version
//
// Exit status 0 when it all matches; 1 with a message naming the file and the first
// difference otherwise.
#include <torch/torch.h>
#include <torch/version.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "tth/tth.h"

namespace {

// Past an epoch end and two StepLR steps, mid-epoch in the data.
constexpr int kIterations = 7;

// The setup whose state travels: the same code on both sides, trained only by `write`.
struct Setup {
  explicit Setup(const std::string& dir) : hook(tth::HookOptions(3).out(dir)) {
    torch::manual_seed(7);
    conv = torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3)),
                                 torch::nn::Flatten(), torch::nn::Linear(8, 3));
    head = torch::nn::Linear(3, 2);
    sgd = std::make_shared<torch::optim::SGD>(conv->parameters(),
                                              torch::optim::SGDOptions(0.1).momentum(0.9));
    adam =
        std::make_shared<torch::optim::Adam>(head->parameters(), torch::optim::AdamOptions(0.01));
    step_lr = std::make_shared<torch::optim::StepLR>(*sgd, /*step_size=*/2, /*gamma=*/0.5);
    data = std::make_shared<tth::BatchIterator>(
        10,
        [](const std::vector<size_t>& rows) {
          const auto n = static_cast<int64_t>(rows.size());
          return tth::Batch(torch::randn({n, 1, 4, 4}), torch::randint(2, {n}, torch::kLong));
        },
        tth::BatchIteratorOptions(4).shuffle(true).seed(3));
    hook.add_model("conv", conv.ptr());
    hook.add_model("head", head.ptr());
    hook.add_optimizer("sgd", sgd);
    hook.add_optimizer("adam", adam);
    hook.add_scheduler("step_lr", step_lr);
    hook.add_state("data", data);
    // The snapshots, through the extension a user registers, after iteration kIterations.
    for (const auto& [file, savefun] : {std::pair{"state.torch", tth::torch_savefun()},
                                        std::pair{"state.npz", tth::npz_savefun()}}) {
      hook.extend(tth::snapshot(tth::SnapshotOptions().savefun(savefun).filename(file)),
                  tth::ExtendOptions().name(file).trigger({kIterations, tth::iteration}));
    }
  }

  void train(int iterations) {
    for (int i = 0; i < iterations;) {
      std::optional<tth::Batch> batch = data->next();
      if (!batch) continue;
      hook.run_iteration([&] {
        sgd->zero_grad();
        adam->zero_grad();
        const at::Tensor logits = head->forward(torch::relu(conv->forward(batch->data)));
        torch::cross_entropy_loss(logits, batch->target).backward();
        sgd->step();
        adam->step();
        step_lr->step();
      });
      ++i;
    }
  }

  torch::nn::Sequential conv{nullptr};
  torch::nn::Linear head{nullptr};
  std::shared_ptr<torch::optim::SGD> sgd;
  std::shared_ptr<torch::optim::Adam> adam;
  std::shared_ptr<torch::optim::StepLR> step_lr;
  std::shared_ptr<tth::BatchIterator> data;
  tth::TorchTrainerHook hook;
};

// Every key of `state` with its dtype, shape and bytes (hex), or its text: one line each.
std::string dump(const tth::StateDict& state) {
  std::ostringstream out;
  for (const auto& [key, value] : state) {
    out << key << ' ';
    if (const auto* text = std::get_if<std::string>(&value)) {
      out << "text " << std::quoted(*text) << '\n';
      continue;
    }
    const at::Tensor tensor = std::get<at::Tensor>(value).contiguous().cpu();
    out << c10::toString(tensor.scalar_type()) << ' ' << tensor.sizes() << ' ';
    const auto* bytes = static_cast<const unsigned char*>(tensor.data_ptr());
    const size_t size = static_cast<size_t>(tensor.numel()) * tensor.element_size();
    static constexpr char kHex[] = "0123456789abcdef";
    for (size_t i = 0; i < size; ++i) out << kHex[bytes[i] >> 4] << kHex[bytes[i] & 15];
    out << '\n';
  }
  return out.str();
}

// The state the snapshots compare: without the elapsed time, which no load restores exactly.
tth::StateDict comparable(tth::StateDict state) {
  state.erase("manager/elapsed_time");
  return state;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw tth::Error("cross_version: cannot read '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write(const std::string& dir) {
  Setup setup(dir);
  setup.train(kIterations);  // the snapshot extensions write both files at the end
  const std::string text = dump(comparable(setup.hook.state_dict()));
  tth::atomic_write(dir + "/state.txt", [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary);
    out << text;
    if (!out.flush()) throw tth::Error("cross_version: cannot write '" + temp + "'");
  });
}

// The first line that differs between two dumps, for the message.
std::string first_difference(const std::string& expected, const std::string& actual) {
  std::istringstream a(expected), b(actual);
  std::string left, right;
  for (int line = 1;; ++line) {
    const bool more_left = static_cast<bool>(std::getline(a, left));
    const bool more_right = static_cast<bool>(std::getline(b, right));
    if (!more_left && !more_right) return "none";
    if (left != right || more_left != more_right) {
      return "line " + std::to_string(line) + ": expected '" + left.substr(0, 160) + "', loaded '" +
             right.substr(0, 160) + "'";
    }
  }
}

int check(const std::string& dir) {
  const std::string expected = read_text(dir + "/state.txt");
  int failures = 0;
  for (const char* name : {"state.torch", "state.npz"}) {
    const std::string path = dir + "/" + name;
    Setup setup(dir);
    setup.hook.load_state_dict(tth::without_metadata(tth::read_snapshot(path)));
    const std::string actual = dump(comparable(setup.hook.state_dict()));
    if (actual == expected) {
      std::cout << "cross_version: " << path << " loads into LibTorch " << TORCH_VERSION
                << " with every byte of its state\n";
      continue;
    }
    std::cerr << "cross_version: " << path << " loaded into LibTorch " << TORCH_VERSION
              << " differs from " << dir << "/state.txt at " << first_difference(expected, actual)
              << '\n';
    ++failures;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  try {
    if (command == "version" && argc == 2) {
      std::cout << TORCH_VERSION << '\n';
      return 0;
    }
    if (command == "write" && argc == 3) {
      write(argv[2]);
      return 0;
    }
    if (command == "check" && argc == 3) return check(argv[2]);
  } catch (const std::exception& error) {
    std::cerr << "cross_version: " << error.what() << '\n';
    return 1;
  }
  std::cerr << "usage: cross_version write DIR | check DIR | version\n";
  return 2;
}
