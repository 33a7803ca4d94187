// Example: train a classifier on MNIST-format data (Fashion-MNIST by default) with
// TorchTrainerHook, the way a Chainer user would with chainer.training.
//
// The training loop is ordinary LibTorch code that the user owns: take a batch, forward,
// loss, backward, step. The hook wraps each iteration and adds, without changing the loop:
//   * the stop trigger (--epochs epochs) and iteration/epoch counting,
//   * evaluation on the test set every epoch (Evaluator -> "validation/main/accuracy"),
//   * a learning-rate decay (ExponentialShift) and the lr in the log (observe_lr),
//   * a check that the weights stay finite (FailOnNonNumber),
//   * a JSON log (LogReport -> <out>/log), a table on stdout (PrintReport), a progress bar,
//     and plots of loss and accuracy (PlotReport -> <out>/loss.png, accuracy.png),
//   * a snapshot of the whole training state every epoch (the newest 3 kept), loaded again
//     when the same command runs again: a killed run continues where its last snapshot was,
//     and ends with the same model, to the byte, as a run that was never interrupted (with
//     the same --seed and --threads: the snapshot holds the weights, the optimizer, the data
//     order's position and the random generator that dropout draws from),
//   * the model at its best test accuracy (<out>/model_best) and at the end (<out>/model_final).
// With --trainer the same training runs through tth::Trainer and StandardUpdater instead of
// the user's loop; the extensions are the same.
//
// Usage: mnist [--data DIR] [--epochs N] [--model cnn|mlp] [--out DIR] ... (mnist --help)
//   scripts/run-example.sh builds it and runs it with the arguments given.
//
// Data-parallel (--world-size N > 1): N processes, the ranks 0 to N-1, train one model
// together, as PyTorch's DistributedDataParallel does:
//   scripts/launch-distributed.sh 2 --epochs 1        # 2 ranks on this machine
//   mnist --world-size 2 --rank 0 --master-addr HOST --master-port 29500 ...   # on host A
//   mnist --world-size 2 --rank 1 --master-addr HOST --master-port 29500 ...   # on host B
// Rank 0 hosts the rendezvous (a c10d TCPStore on --master-addr:--master-port, which every
// rank must reach); the gradients are averaged over Gloo (TCP; GLOO_SOCKET_IFNAME picks the
// network interface). What changes against one process:
//   * every rank starts from rank 0's weights (tth::DataParallel broadcasts them), and after
//     each backward pass the gradients are averaged over the ranks, so every rank takes the
//     same step and the replicas stay equal;
//   * each epoch is split over the ranks (a sharded BatchIterator, the same seed on every
//     rank): each rank trains on its 1/N of the training set, in batches of --batch-size, so
//     the job's batch is N x --batch-size; each rank evaluates its 1/N of the test set;
//   * the reported losses and accuracies are averaged over the ranks (average_across_ranks)
//     before the log, the plots and the best-model trigger read them: every rank decides alike;
//   * rank 0 alone writes the log, plots, snapshots, model_best and model_final, and prints
//     the table; the ranks share --out (each takes its own lock file in it), and every rank
//     resumes from the same snapshot. Resume with the same --world-size: a snapshot records
//     the number of ranks that saved it.
// With --trainer, tth::Trainer takes the process group, and StandardUpdater averages the
// gradients itself (it wraps the model in a DataParallel when attached to the hook).
//
// Resuming (--resume):
//   auto  (default) continue from the newest snapshot in --out that verifies, if any;
//   PATH  continue from that snapshot file (verified first);
//   none  start fresh; refused when --out holds snapshots of an earlier run, so that the new
//         run's snapshots and log are never mixed with the old ones (remove them, or give
//         another --out).
//
// Exit status: 0 done; 1 a training error (bad data, a snapshot that does not fit, an output
// directory in use, a rank that failed or did not join), printed as "mnist: <message>"; 2 a bad
// flag.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "data.h"
#include "models.h"
#include "tth/batch_iterator.h"
#include "tth/data_parallel.h"
#include "tth/extensions/average_across_ranks.h"
#include "tth/extensions/evaluator.h"
#include "tth/extensions/exponential_shift.h"
#include "tth/extensions/fail_on_non_number.h"
#include "tth/extensions/log_report.h"
#include "tth/extensions/observe_value.h"
#include "tth/extensions/plot_report.h"
#include "tth/extensions/print_report.h"
#include "tth/extensions/progress_bar.h"
#include "tth/process_group.h"
#include "tth/tth.h"

namespace {

// ---- Flags ----

struct Flags {
  std::string data = mnist::kDefaultDataDirectory;
  int epochs = 3;
  int64_t batch_size = 64;
  double lr = 0;  // 0: the optimizer's default below
  std::string model = "cnn";
  std::string optimizer = "sgd";
  std::string out = "result";
  uint64_t seed = 0;
  std::string savefun = "torch";
  std::string resume = "auto";
  int threads = std::max(1u, std::thread::hardware_concurrency());
  bool trainer = false;
  bool no_extensions = false;
  int64_t limit = 0;  // 0: every example
  // Data-parallel training (world_size > 1).
  int world_size = 1;
  int rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int timeout = 300;  // seconds
};

// Learning rates that reach about 91% (CNN) after 3 epochs with the decay below.
constexpr double kSgdLr = 0.02;
constexpr double kSgdMomentum = 0.9;
constexpr double kAdamLr = 1e-3;
// Each epoch multiplies the learning rate by this (ExponentialShift).
constexpr double kLrDecay = 0.7;
// Test batches: larger than training ones (no gradients), not so large that their activations
// leave the caches, and a divisor of MNIST's 10000 test images, so that the evaluator's mean
// over batches is the exact accuracy.
constexpr int64_t kEvalBatchSize = 125;
constexpr int kRetainedSnapshots = 3;
// Exit status of a bad flag, as getopt-style tools use.
constexpr int kUsageError = 2;

// Parses the flags; returns the exit status when the program should end now (--help, or a
// bad flag), nothing when it should train.
std::optional<int> parse_flags(int argc, char** argv, Flags& flags) {
  CLI::App app{
      "Trains a CNN or an MLP on MNIST-format data (Fashion-MNIST by default) with "
      "TorchTrainerHook's extensions.",
      "mnist"};
  app.get_formatter()->column_width(30);
  app.add_option("--data", flags.data,
                 "Directory of train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)")
      ->capture_default_str();
  app.add_option("--epochs", flags.epochs, "Epochs to train")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--batch-size", flags.batch_size,
                 "Training examples per batch and rank (the job's batch is --world-size times "
                 "this)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--lr", flags.lr,
                 "Learning rate; default 0.02 for sgd, 0.001 for adam; decays x0.7 each epoch")
      ->check(CLI::PositiveNumber);
  app.add_option("--model", flags.model, "Model: cnn (2 conv + 2 fc layers) or mlp (3 fc layers)")
      ->check(CLI::IsMember({"cnn", "mlp"}))
      ->capture_default_str();
  app.add_option("--optimizer", flags.optimizer, "Optimizer: sgd (momentum 0.9) or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
  app.add_option("--out", flags.out, "Output directory: log, plots, snapshots, models")
      ->capture_default_str();
  app.add_option("--seed", flags.seed, "Seed of the initial weights, dropout and data order")
      ->capture_default_str();
  app.add_option("--savefun", flags.savefun,
                 "Format of snapshots and models: torch (LibTorch archive) or npz (numpy)")
      ->check(CLI::IsMember({"torch", "npz"}))
      ->capture_default_str();
  app.add_option("--resume", flags.resume,
                 "auto: continue from the newest snapshot in --out; PATH: from that snapshot; "
                 "none: start fresh (refused if --out holds snapshots)")
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            if (value == "auto" || value == "none" || std::filesystem::is_regular_file(value)) {
              return {};
            }
            return "'" + value + "' is neither auto, none nor an existing snapshot file";
          },
          "auto|none|PATH"))
      ->capture_default_str();
  app.add_option("--threads", flags.threads, "CPU threads of LibTorch (default: all cores)")
      ->check(CLI::Range(1, 4096));
  app.add_flag("--trainer", flags.trainer,
               "Train through tth::Trainer and StandardUpdater instead of the example's loop "
               "(one process only)");
  app.add_flag("--no-extensions", flags.no_extensions,
               "The bare loop: the hook counts iterations, nothing else (no evaluation, logs, "
               "snapshots or model files); for measuring the loop's speed");
  app.add_option("--limit", flags.limit,
                 "Use only the first N training and N test examples (for tests, quick tries)")
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  app.add_option("--world-size", flags.world_size,
                 "Ranks (processes) of a data-parallel job; 1: train alone")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--rank", flags.rank, "This process's rank in the job, 0 to --world-size - 1")
      ->capture_default_str();
  app.add_option("--master-addr", flags.master_addr,
                 "Host of rank 0, where the job meets (every rank must reach it)")
      ->capture_default_str();
  app.add_option("--master-port", flags.master_port, "Port of the meeting point on rank 0's host")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_option("--timeout", flags.timeout,
                 "Seconds a rank waits for the others (to join, and in each exchange)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
    // Checks that involve two flags, reported as CLI11 reports the others.
    if (flags.rank < 0 || flags.rank >= flags.world_size) {
      throw CLI::ValidationError("--rank", std::to_string(flags.rank) +
                                               " is not a rank of a job of --world-size " +
                                               std::to_string(flags.world_size) + " (0 to " +
                                               std::to_string(flags.world_size - 1) + ")");
    }
    if (flags.world_size > 1 && flags.master_addr.empty()) {
      throw CLI::ValidationError("--master-addr", "must name rank 0's host");
    }
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    // One line: what is wrong, and where to look.
    std::cerr << "mnist: " << error.what() << " (see mnist --help)\n";
    return kUsageError;
  }
  if (flags.lr == 0) flags.lr = flags.optimizer == "adam" ? kAdamLr : kSgdLr;
  return std::nullopt;
}

// ---- Model ----

// A model of either kind, behind one forward function.
struct Model {
  std::shared_ptr<torch::nn::Module> module;
  std::function<at::Tensor(const at::Tensor&)> forward;
};

Model make_model(const std::string& kind) {
  if (kind == "mlp") {
    mnist::Mlp mlp;
    return {mlp.ptr(), [mlp](const at::Tensor& x) mutable { return mlp->forward(x); }};
  }
  mnist::Cnn cnn;
  return {cnn.ptr(), [cnn](const at::Tensor& x) mutable { return cnn->forward(x); }};
}

std::shared_ptr<torch::optim::Optimizer> make_optimizer(const Flags& flags, const Model& model) {
  if (flags.optimizer == "adam") {
    return std::make_shared<torch::optim::Adam>(model.module->parameters(),
                                                torch::optim::AdamOptions(flags.lr));
  }
  return std::make_shared<torch::optim::SGD>(
      model.module->parameters(), torch::optim::SGDOptions(flags.lr).momentum(kSgdMomentum));
}

// ---- Data ----

// The batch of `examples` at `indices`: what a BatchIterator asks for.
tth::BatchIterator::GetBatch batches_of(const mnist::Examples& examples) {
  return [examples](const std::vector<size_t>& indices) {
    std::vector<int64_t> rows(indices.begin(), indices.end());
    const at::Tensor index = torch::tensor(rows, torch::kLong);
    return tth::Batch(examples.images.index_select(0, index),
                      examples.labels.index_select(0, index));
  };
}

// ---- Resume checks ----

constexpr char kSnapshotPrefix[] = "snapshot_iter_";

// The snapshot files of an earlier run in `out`, sorted.
std::vector<std::string> snapshots_in(const std::string& out) {
  std::vector<std::string> found;
  std::error_code error;
  for (std::filesystem::directory_iterator it(out, error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kSnapshotPrefix, 0) == 0) found.push_back(name);
  }
  std::sort(found.begin(), found.end());
  return found;
}

// --resume none must not mix a fresh run into the files of an earlier one. In a job every rank
// checks its --out (the shared directory, or its copy of it) and all agree: if any rank refuses,
// all do, rather than leaving the others waiting for it.
void check_fresh_out(const std::string& out, tth::ProcessGroup* group) {
  const std::vector<std::string> found = snapshots_in(out);
  const bool fresh = found.empty();
  if (group != nullptr && !group->all_true(fresh) && fresh) {
    throw tth::Error(
        "--resume none: another rank's --out holds snapshots of an earlier run "
        "(see its message)");
  }
  if (fresh) return;
  std::string names;
  for (const std::string& name : found) names += (names.empty() ? "" : ", ") + name;
  throw tth::Error("--resume none: '" + out + "' holds snapshots of an earlier run (" + names +
                   "); continue it with --resume auto, or remove them, or give another --out");
}

// ---- Data-parallel job ----

// This process's place in the job, or null when it trains alone.
std::shared_ptr<tth::ProcessGroup> join_job(const Flags& flags) {
  if (flags.world_size == 1) return nullptr;
  const auto start = std::chrono::steady_clock::now();
  // Blocks until every rank has joined (or the timeout passed).
  auto group =
      std::make_shared<tth::ProcessGroup>(tth::DistributedOptions(flags.world_size, flags.rank)
                                              .master_addr(flags.master_addr)
                                              .master_port(flags.master_port)
                                              .timeout(std::chrono::seconds(flags.timeout)));
  std::cout << "mnist: rank " << flags.rank << " of " << flags.world_size << " joined "
            << flags.master_addr << ":" << flags.master_port << " ("
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s)\n";
  return group;
}

// DataParallel keeps the ranks' replicas equal, to the bit; checked once, when training ends
// (one broadcast of the weights), since a rank that stepped alone would go unnoticed otherwise:
// only rank 0's model is saved.
void check_replicas_equal(const Model& model, tth::ProcessGroup& group) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& parameter : model.module->parameters()) {
    flat.push_back(parameter.detach().reshape(-1));
  }
  const at::Tensor mine = torch::cat(flat);
  std::vector<at::Tensor> rank0 = {mine.clone()};
  group.broadcast(rank0, 0);
  if (!group.all_true(rank0[0].equal(mine))) {
    throw tth::Error(
        "the ranks' models differ after training: every rank must average its "
        "gradients (DataParallel::synchronize_gradients) before each step");
  }
}

// The mean of `value` over the ranks (itself when alone).
double mean_over_ranks(double value, tth::ProcessGroup* group) {
  if (group == nullptr) return value;
  std::vector<at::Tensor> sum = {torch::tensor({value}, torch::kDouble)};
  group->all_reduce_sum(sum);
  return sum[0].item<double>() / group->world_size();
}

// ---- Training ----

// What the extensions need to know besides the hook.
struct Setup {
  const Flags& flags;
  const Model& model;
  std::shared_ptr<tth::Evaluator> evaluator;
  tth::SaveFunction savefun;
};

// Registers the extensions: everything the hook adds to the bare loop.
void add_extensions(tth::TorchTrainerHook& hook, const Setup& setup) {
  const Flags& flags = setup.flags;
  // Writers first (priority kWriter): the test-set metrics and the learning rate, reported
  // into the epoch's last observation, where LogReport and MaxValueTrigger read them.
  hook.extend(setup.evaluator);  // every epoch, "validation/main/loss" and ".../accuracy"
  hook.extend(tth::observe_lr());
  // In a job: each rank's values replaced by the job's means, before the extensions below and
  // the best-model trigger read them (an editor, kEditor), so that every rank logs and decides
  // alike. The test set's mean is exact when every rank's shard has whole batches of the same
  // size, as Fashion-MNIST's 10000 test images on 2, 4 or 8 ranks.
  if (hook.process_group()) {
    hook.extend(tth::average_across_ranks(
        {"main/loss", "main/accuracy", "validation/main/loss", "validation/main/accuracy"}));
  }
  // An editor (kEditor): after the epoch's lr was observed, decay it for the next epoch.
  hook.extend(std::make_shared<tth::ExponentialShift>(kLrDecay),
              tth::ExtendOptions().trigger({1, tth::epoch}));
  // Readers (kReader), every iteration.
  hook.extend(std::make_shared<tth::FailOnNonNumber>());
  hook.extend(std::make_shared<tth::LogReport>());  // a row per epoch in <out>/log
  hook.extend(std::make_shared<tth::PrintReport>(std::vector<std::string>{
      "epoch", "iteration", "main/loss", "main/accuracy", "validation/main/loss",
      "validation/main/accuracy", "lr", "elapsed_time"}));
  hook.extend(std::make_shared<tth::ProgressBar>(tth::ProgressBarOptions().update_interval(100)));
  hook.extend(std::make_shared<tth::PlotReport>(
      std::vector<std::string>{"main/loss", "validation/main/loss"},
      tth::PlotReportOptions().x_key("epoch").filename("loss.png")));
  hook.extend(std::make_shared<tth::PlotReport>(
      std::vector<std::string>{"main/accuracy", "validation/main/accuracy"},
      tth::PlotReportOptions().x_key("epoch").filename("accuracy.png")));
  // Snapshots (kSnapshot), after every trigger of the iteration was evaluated.
  hook.extend(tth::snapshot(tth::SnapshotOptions()
                                .savefun(setup.savefun)
                                .n_retains(kRetainedSnapshots)
                                .autoload(flags.resume == "auto")));
  hook.extend(tth::snapshot_object(setup.model.module, "model_best",
                                   tth::SnapshotOptions().savefun(setup.savefun)),
              tth::ExtendOptions()
                  .name("model_best")
                  .trigger(std::make_shared<tth::MaxValueTrigger>("validation/main/accuracy")));
  // The final model, written in the last iteration while the run still holds --out.
  hook.extend(tth::snapshot_object(setup.model.module, "model_final",
                                   tth::SnapshotOptions().savefun(setup.savefun)),
              tth::ExtendOptions().name("model_final").trigger({flags.epochs, tth::epoch}));
}

// Loads the snapshot --resume names into the hook, before training starts.
void load_snapshot(tth::TorchTrainerHook& hook, const std::string& path) {
  tth::StateDict state = tth::without_metadata(tth::read_snapshot(path));  // verifies first
  try {
    hook.load_state_dict(std::move(state));
  } catch (const tth::StateError& error) {
    throw error.in_file("--resume", path);
  }
  std::cerr << "mnist: resumed from '" << path << "' (iteration " << hook.iteration() << ")\n";
}

int train(const Flags& flags) {
  torch::set_num_threads(flags.threads);
  // Initial weights (rank 0's win in a job); dropout draws from the same generator.
  torch::manual_seed(flags.seed);
  // What only one process of a job prints; the others print that they joined, resumes, errors.
  const bool printer = flags.rank == 0;

  mnist::LoadOptions load_options;
  load_options.normalize(true);
  if (flags.limit > 0) load_options.limit(flags.limit);
  const auto load_start = std::chrono::steady_clock::now();
  const mnist::Dataset data = mnist::load_mnist(flags.data, load_options);
  if (data.train.images.size(2) != mnist::kImageSide ||
      data.train.images.size(3) != mnist::kImageSide) {
    throw tth::Error(data.files.train_images + ": images of " +
                     std::to_string(data.train.images.size(2)) + "x" +
                     std::to_string(data.train.images.size(3)) + ", but the models take 28x28");
  }
  if (printer) {
    std::cout
        << "mnist: " << data.train.size() << " training and " << data.test.size()
        << " test images from " << flags.data << " ("
        << std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count()
        << " s), " << flags.threads << " threads\n";
  }

  // The job (after loading the data, so that a rank with bad data fails before the others wait
  // for it), and the resume check, agreed by the ranks, before anything is written.
  const std::shared_ptr<tth::ProcessGroup> group = join_job(flags);
  if (flags.resume == "none") check_fresh_out(flags.out, group.get());

  const Model model = make_model(flags.model);
  // In a job: rank 0's weights on every rank now, the gradients' mean after each backward.
  std::shared_ptr<tth::DataParallel> parallel;
  // (With --trainer, StandardUpdater makes its own when it is attached to the hook.)
  if (group && !flags.trainer) parallel = std::make_shared<tth::DataParallel>(model.module, group);
  const auto optimizer = make_optimizer(flags, model);

  // The training batches: shuffled, in an order that follows from the seed and the epoch, and
  // resumable mid-epoch (its position is part of the saved state). In a job, every rank draws
  // the same order (the same seed) and takes its own share of it.
  auto train_batches =
      std::make_shared<tth::BatchIterator>(data.train.size(), batches_of(data.train),
                                           tth::BatchIteratorOptions(flags.batch_size)
                                               .shuffle(true)
                                               .seed(flags.seed)
                                               .num_replicas(flags.world_size)
                                               .rank(flags.rank));
  // The test batches, in order; the evaluator runs one pass per epoch (over this rank's share).
  auto test_batches = std::make_shared<tth::BatchIterator>(data.test.size(), batches_of(data.test),
                                                           tth::BatchIteratorOptions(kEvalBatchSize)
                                                               .shuffle(false)
                                                               .num_replicas(flags.world_size)
                                                               .rank(flags.rank));

  // The loss of a training batch; also counts the images and reports the batch accuracy.
  int64_t trained_images = 0;
  auto loss_of = [&](const tth::Batch& batch) {
    const at::Tensor logits = model.forward(batch.data);
    const at::Tensor loss = torch::cross_entropy_loss(logits, batch.target);
    tth::report("main/accuracy", logits.argmax(1).eq(batch.target).to(torch::kFloat).mean());
    trained_images += batch.data.size(0);
    return loss;
  };
  // The same metrics on a test batch (the Evaluator prefixes them with "validation/").
  auto evaluate = [&](const tth::Batch& batch) {
    const at::Tensor logits = model.forward(batch.data);
    tth::report("main/loss", torch::cross_entropy_loss(logits, batch.target));
    tth::report("main/accuracy", logits.argmax(1).eq(batch.target).to(torch::kFloat).mean());
  };
  auto evaluator = std::make_shared<tth::Evaluator>(
      [test_batches](const std::function<void(const tth::Batch&)>& visit) {
        test_batches->reset();
        while (auto batch = test_batches->next()) visit(*batch);
      },
      model.module, evaluate);

  const Setup setup{flags, model, evaluator,
                    flags.savefun == "npz" ? tth::npz_savefun() : tth::torch_savefun()};
  const tth::TriggerRef stop{flags.epochs, tth::epoch};
  double seconds = 0;
  int64_t iterations = 0;
  if (!flags.trainer) {
    // ---- The user's own loop, with the hook around each iteration ----
    tth::TorchTrainerHook hook(tth::HookOptions(train_batches->batches_per_epoch())
                                   .out(flags.out)
                                   .stop_trigger(stop)
                                   .process_group(group));
    hook.add_model("main", model.module);
    hook.add_optimizer("main", optimizer);
    hook.add_state("train_iterator", train_batches);  // mid-epoch resume: the same batches
    if (!flags.no_extensions) add_extensions(hook, setup);
    if (flags.resume != "auto" && flags.resume != "none") load_snapshot(hook, flags.resume);

    const auto start = std::chrono::steady_clock::now();
    hook.start();  // resume phase: autoload of the newest snapshot
    const int64_t first_iteration = hook.iteration();
    while (!hook.done()) {
      std::optional<tth::Batch> batch = train_batches->next();
      if (!batch) continue;  // an epoch ended; the next call starts the next one
      hook.run_iteration([&] {
        model.module->train();  // the evaluator leaves the model in eval mode
        optimizer->zero_grad();
        const at::Tensor loss = loss_of(*batch);
        loss.backward();
        if (parallel) parallel->synchronize_gradients();  // the same step on every rank
        optimizer->step();
        tth::report("main/loss", loss);
      });
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    iterations = hook.iteration() - first_iteration;
  } else {
    // ---- The same training through Trainer: the updater owns the step ----
    auto updater =
        std::make_shared<tth::StandardUpdater>(train_batches, model.module, optimizer, loss_of);
    tth::Trainer trainer(updater, stop, flags.out, group);
    if (!flags.no_extensions) add_extensions(trainer.hook(), setup);
    if (flags.resume != "auto" && flags.resume != "none") {
      load_snapshot(trainer.hook(), flags.resume);
    }
    const auto start = std::chrono::steady_clock::now();
    trainer.hook().start();
    const int64_t first_iteration = trainer.hook().iteration();
    trainer.run();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    iterations = trainer.hook().iteration() - first_iteration;
  }

  // The final test accuracy, by the evaluator's pass (outside the hook: nothing is reported);
  // in a job, each rank's share, then their mean. The job trained world_size times the images
  // of one rank (the shards are of equal size).
  if (group) check_replicas_equal(model, *group);
  const double accuracy = mean_over_ranks(
      evaluator->evaluate().at(evaluator->prefix() + "/main/accuracy"), group.get());
  trained_images *= flags.world_size;
  if (!printer) return 0;
  char line[256];
  std::snprintf(line, sizeof line,
                "mnist: test accuracy %.2f%% (%lld images); trained %lld iterations (%lld "
                "images%s) in %.1f s: %.0f images/s\n",
                100 * accuracy, static_cast<long long>(data.test.size()),
                static_cast<long long>(iterations), static_cast<long long>(trained_images),
                group ? (" on " + std::to_string(flags.world_size) + " ranks").c_str() : "",
                seconds, seconds > 0 ? trained_images / seconds : 0.0);
  std::cout << line;
  if (!flags.no_extensions) {
    std::cout << "mnist: " << flags.out << "/model_final (" << flags.savefun << "), log, "
              << "loss.png, accuracy.png, model_best, snapshots\n";
  }
  return 0;
}

// glibc gives freed blocks above 128 KiB back to the kernel (mmap'd blocks, the top of the
// heap), and each training step frees and allocates activations and gradients of a few MiB
// (11 MB at the evaluator's batch of 125): with the defaults the example took 1.7 million page
// faults in 20,000 images, about a third of its time. Keeping such blocks in the heap is the
// usual advice for LibTorch on CPU (as jemalloc or tcmalloc would).
void keep_freed_memory() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();
  Flags flags;
  if (auto status = parse_flags(argc, argv, flags)) return *status;
  try {
    return train(flags);
  } catch (const std::exception& error) {
    // tth::Error (bad data, a snapshot that does not fit, --out in use, a failed exchange
    // between the ranks) and LibTorch's errors. In a job, the rank says which it is.
    std::cerr << "mnist: "
              << (flags.world_size > 1 ? "rank " + std::to_string(flags.rank) + ": " : "")
              << error.what() << '\n';
    return 1;
  }
}
