// End-to-end: a small model trained on synthetic data, with a user-owned loop and with Trainer.
#include "support.h"
#include "tth/batch_iterator.h"

namespace tth {
namespace {

// y = argmax(x W) for a fixed W: a separable 3-class problem.
struct Synthetic : torch::data::datasets::Dataset<Synthetic> {
  explicit Synthetic(int64_t n) {
    torch::manual_seed(0);
    inputs = torch::randn({n, 4});
    targets = inputs.matmul(torch::randn({4, 3})).argmax(1);
  }
  torch::data::Example<> get(size_t index) override {
    return {inputs[static_cast<int64_t>(index)], targets[static_cast<int64_t>(index)]};
  }
  torch::optional<size_t> size() const override { return static_cast<size_t>(inputs.size(0)); }
  torch::Tensor inputs, targets;
};

torch::nn::Sequential make_model() {
  torch::manual_seed(42);
  return torch::nn::Sequential(torch::nn::Linear(4, 16), torch::nn::ReLU(),
                               torch::nn::Linear(16, 3));
}

auto make_loader(const Synthetic& data, size_t batch) {
  return torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      Synthetic(data).map(torch::data::transforms::Stack<>()), batch);
}

TEST(EndToEnd, UserOwnedLoopTrainsAndRunsExtensions) {
  Synthetic data(64);
  auto model = make_model();
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.5));
  auto loader = make_loader(data, 16);  // 4 iterations per epoch

  TorchTrainerHook hook{HookOptions(4).stop_trigger({10, epoch})};
  hook.add_model("main", model);
  std::vector<double> epoch_losses;
  RunningMean mean;
  hook.extend(make_extension([&](TorchTrainerHook& h) { mean.add(h.observation(), "main/loss"); }),
              "accumulate", {1, iteration}, priority::kWriter);
  hook.extend(make_extension([&](TorchTrainerHook&) {
                epoch_losses.push_back(mean.take("main/loss", "test"));
              }),
              "epoch_mean", {1, epoch});

  while (!hook.done()) {
    for (auto& batch : *loader) {
      if (hook.done()) break;
      hook.run_iteration([&] {
        optimizer.zero_grad();
        auto loss = torch::cross_entropy_loss(model->forward(batch.data), batch.target);
        loss.backward();
        optimizer.step();
        report("main/loss", loss);
      });
    }
  }
  EXPECT_EQ(hook.iteration(), 40);
  ASSERT_EQ(epoch_losses.size(), 10u);
  EXPECT_LT(epoch_losses.back(), 0.5 * epoch_losses.front());
}

TEST(EndToEnd, TrainerMatchesTheUserOwnedLoopExactly) {
  Synthetic data(60);
  // The user-owned loop.
  auto manual_model = make_model();
  {
    torch::optim::SGD optimizer(manual_model->parameters(), torch::optim::SGDOptions(0.05));
    auto loader = make_loader(data, 8);  // 8 batches per pass (the last one of 4)
    TorchTrainerHook hook{HookOptions(8).stop_trigger({3, epoch})};
    hook.add_model("main", manual_model);
    while (!hook.done()) {
      for (auto& batch : *loader) {
        hook.run_iteration([&] {
          optimizer.zero_grad();
          auto loss = torch::cross_entropy_loss(manual_model->forward(batch.data), batch.target);
          loss.backward();
          optimizer.step();
        });
      }
    }
  }
  // Trainer with a StandardUpdater over a loader of unstacked examples.
  auto model = make_model();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.05));
  auto loader =
      torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(Synthetic(data), 8);
  auto updater = std::make_shared<StandardUpdater>(
      std::move(loader), 60, model.ptr(), optimizer, [&](const Batch& batch) {
        return torch::cross_entropy_loss(model->forward(batch.data), batch.target);
      });
  EXPECT_EQ(updater->iters_per_epoch(), 8);
  std::vector<double> losses;
  Trainer trainer(updater, {3, epoch});
  trainer.extend(make_extension(
      [&](TorchTrainerHook& h) { losses.push_back(h.observation().at("main/loss").value()); }));
  trainer.run();
  EXPECT_EQ(trainer.hook().iteration(), 24);
  EXPECT_EQ(losses.size(), 24u);
  EXPECT_EQ(trainer.hook().models().count("main"), 1u);
  // The optimizer is part of the state too, so a snapshot of a Trainer resumes it.
  EXPECT_EQ(trainer.hook().optimizers().count("main"), 1u);
  EXPECT_TRUE(trainer.hook().state_dict().contains("optimizers/main/param_groups/0/lr"));
  auto a = manual_model->parameters();
  auto b = model->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(test::same_tensor(a[i], b[i])) << i;
  EXPECT_THROW_WITH(trainer.run(), Error, "already ran");
}

TEST(EndToEnd, TrainerPropagatesUpdaterErrorsAfterTheErrorPath) {
  auto model = make_model();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.05));
  int batches = 0;
  auto updater = std::make_shared<StandardUpdater>(
      [&]() -> std::optional<Batch> {
        if (++batches > 3) throw std::runtime_error("disk gone");
        return Batch{torch::randn({2, 4}), torch::zeros({2}, torch::kLong)};
      },
      10, model.ptr(), optimizer,
      [&](const Batch& batch) {
        return torch::cross_entropy_loss(model->forward(batch.data), batch.target);
      });
  std::vector<std::string> log;
  Trainer trainer(updater, {1, epoch});
  trainer.extend(std::make_shared<test::Recorder>("r", &log),
                 ExtendOptions().trigger(TriggerRef::never()));
  EXPECT_THROW_WITH(trainer.run(), std::runtime_error, "disk gone");
  EXPECT_EQ(log, (std::vector<std::string>{"r:initialize@0", "r:on_error@3", "r:finalize@3"}));
}

TEST(EndToEnd, TrainerExtendTakesOptionsAndThePositionalForm) {
  auto model = make_model();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.05));
  auto updater = std::make_shared<StandardUpdater>(
      []() -> std::optional<Batch> {
        return Batch{torch::randn({2, 4}), torch::zeros({2}, torch::kLong)};
      },
      4, model.ptr(), optimizer,
      [&](const Batch& batch) {
        return torch::cross_entropy_loss(model->forward(batch.data), batch.target);
      });
  std::vector<std::string> log;
  Trainer trainer(updater, {4, iteration});
  EXPECT_EQ(trainer.extend(std::make_shared<test::Recorder>("a", &log),
                           ExtendOptions().name("options").trigger({2, iteration})),
            "options");
  EXPECT_EQ(trainer.extend(std::make_shared<test::Recorder>("b", &log), "positional",
                           {3, iteration}, priority::kWriter),
            "positional");
  trainer.run();
  // The recorders log their own names: b (kWriter) runs before a.
  EXPECT_EQ(log,
            (std::vector<std::string>{"b:initialize@0", "a:initialize@0", "a:call@2", "b:call@3",
                                      "a:call@4", "b:finalize@4", "a:finalize@4"}));
  EXPECT_EQ(trainer.hook().extension_names(), (std::vector<std::string>{"positional", "options"}));
}

TEST(EndToEnd, StandardUpdaterChecksTheEpochLengthAndArguments) {
  auto model = make_model();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.05));
  auto loss = [&](const Batch& batch) {
    return torch::cross_entropy_loss(model->forward(batch.data), batch.target);
  };
  Synthetic data(20);
  auto wrong_size =
      std::make_shared<StandardUpdater>(make_loader(data, 5), 30, model.ptr(), optimizer, loss);
  EXPECT_EQ(wrong_size->iters_per_epoch(), 6);
  for (int i = 0; i < 4; ++i) wrong_size->update();
  EXPECT_THROW_WITH(wrong_size->update(), Error,
                    "gave 4 batches in a pass, but iters_per_epoch is 6");
  EXPECT_THROW_WITH(StandardUpdater(make_loader(data, 5), 0, model.ptr(), optimizer, loss), Error,
                    "dataset_size must be > 0");
  EXPECT_THROW_WITH(StandardUpdater(make_loader(data, 5), 20, nullptr, optimizer, loss), Error,
                    "model must not be null");
  EXPECT_THROW_WITH(Trainer(nullptr, {1, epoch}), Error, "updater must not be null");
  EXPECT_THROW_WITH(Trainer(wrong_size, TriggerRef::never()), Error, "stop_trigger must be set");
}

TEST(StandardUpdater, OverABatchIteratorSavesItsPosition) {
  auto data = std::make_shared<Synthetic>(20);
  auto model = make_model();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.05));
  std::vector<at::Tensor> seen;
  auto loss = [&](const Batch& batch) {
    seen.push_back(batch.data);
    return torch::cross_entropy_loss(model->forward(batch.data), batch.target);
  };
  auto iterator = std::make_shared<BatchIterator>(
      data, BatchIteratorOptions(6).seed(3).device(torch::Device(torch::kCPU)));
  auto updater = std::make_shared<StandardUpdater>(iterator, model.ptr(), optimizer, loss);
  EXPECT_EQ(updater->iters_per_epoch(), 4);  // the last batch holds 2 examples
  EXPECT_EQ(updater->iterator(), iterator);
  for (int i = 0; i < 5; ++i) {
    model->eval();  // as an evaluator may leave it
    updater->update();
    EXPECT_TRUE(model->is_training()) << i;
  }
  // The batches of the iterator's order, across the epoch boundary.
  ASSERT_EQ(seen.size(), 5u);
  for (int64_t i = 0; i < 5; ++i) {
    const auto indices = iterator->indices(i / 4, i % 4);
    const auto rows = torch::tensor(std::vector<int64_t>(indices.begin(), indices.end()));
    EXPECT_TRUE(test::same_tensor(seen[i], data->inputs.index_select(0, rows))) << i;
  }
  const StateDict state = updater->state_dict();
  EXPECT_EQ(state.get_int("iterator/epoch"), 1);
  EXPECT_EQ(state.get_int("iterator/position"), 1);
  EXPECT_EQ(state.get_int("iterator/batch_size"), 6);

  // The dataset form builds the same iterator.
  auto same = std::make_shared<StandardUpdater>(data, BatchIteratorOptions(6).seed(3), model.ptr(),
                                                optimizer, loss);
  EXPECT_EQ(same->iters_per_epoch(), 4);
  same->load_state_dict(state);
  EXPECT_EQ(same->iterator()->epoch(), 1);
  EXPECT_EQ(same->iterator()->position(), 1);
  EXPECT_THROW_WITH(StandardUpdater(std::make_shared<Synthetic>(21),
                                    BatchIteratorOptions(6).seed(3), model.ptr(), optimizer, loss)
                        .load_state_dict(state),
                    StateError, "key 'dataset_size': was saved for dataset_size 20");

  // A loader has no position to save: its resume is exact only at epoch boundaries.
  StandardUpdater loader_updater(make_loader(*data, 6), 20, model.ptr(), optimizer, loss);
  EXPECT_TRUE(loader_updater.state_dict().empty());
  EXPECT_EQ(loader_updater.iterator(), nullptr);

  EXPECT_THROW_WITH(StandardUpdater(std::shared_ptr<BatchIterator>(), model.ptr(), optimizer, loss),
                    Error, "StandardUpdater: iterator must not be null");
  EXPECT_THROW_WITH(StandardUpdater(iterator, model.ptr(), nullptr, loss), Error,
                    "StandardUpdater: optimizer must not be null");
  EXPECT_THROW_WITH(StandardUpdater(iterator, model.ptr(), optimizer, nullptr), Error,
                    "StandardUpdater: loss must be callable");
}

// One Trainer run over a shuffled BatchIterator, with dropout (so the RNG state matters) and
// momentum (so the optimizer state matters); a snapshot at `snapshot_at` that autoloads.
struct MidEpochRun {
  std::vector<at::Tensor> batches;  // the inputs of every batch trained on, in order
  std::vector<at::Tensor> parameters;
  StateDict state;  // at the end
};

MidEpochRun train_mid_epoch(const Synthetic& data, const std::string& out, TriggerRef stop,
                            double snapshot_at) {
  torch::manual_seed(42);
  torch::nn::Sequential model(torch::nn::Linear(4, 16), torch::nn::ReLU(), torch::nn::Dropout(0.3),
                              torch::nn::Linear(16, 3));
  auto optimizer = std::make_shared<torch::optim::SGD>(
      model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  MidEpochRun run;
  auto updater = std::make_shared<StandardUpdater>(
      std::make_shared<Synthetic>(data), BatchIteratorOptions(8).seed(21), model.ptr(), optimizer,
      [&](const Batch& batch) {
        run.batches.push_back(batch.data);
        return torch::cross_entropy_loss(model->forward(batch.data), batch.target);
      });
  Trainer trainer(updater, std::move(stop), out);
  trainer.extend(snapshot(SnapshotOptions().autoload(true)),
                 ExtendOptions().trigger(std::make_shared<ManualScheduleTrigger>(
                     std::vector<double>{snapshot_at}, iteration)));
  trainer.run();
  for (const auto& parameter : model->parameters()) run.parameters.push_back(parameter.clone());
  run.state = trainer.hook().state_dict();
  return run;
}

TEST(Trainer, ResumesMidEpochBitForBit) {
  const Synthetic data(50);  // batches of 8: 7 per epoch, the last of 2
  test::TempDir dir;
  for (const int64_t stop_at : {3, 7, 10, 16}) {
    SCOPED_TRACE("stopped at iteration " + std::to_string(stop_at));
    const std::string tag = std::to_string(stop_at);
    const MidEpochRun straight =
        train_mid_epoch(data, dir / ("straight" + tag), {3, epoch}, static_cast<double>(stop_at));
    ASSERT_EQ(straight.batches.size(), 21u);

    const MidEpochRun first = train_mid_epoch(data, dir / ("resumed" + tag), {stop_at, iteration},
                                              static_cast<double>(stop_at));
    ASSERT_EQ(first.batches.size(), static_cast<size_t>(stop_at));
    // The snapshot holds the iterator's position within the epoch.
    EXPECT_EQ(first.state.get_int("state/updater/iterator/epoch"), (stop_at - 1) / 7);
    EXPECT_EQ(first.state.get_int("state/updater/iterator/position"), (stop_at - 1) % 7 + 1);
    ASSERT_TRUE(std::filesystem::exists(dir / ("resumed" + tag + "/snapshot_iter_" + tag)));

    // A fresh Trainer (fresh model, optimizer, iterator) autoloads the snapshot and finishes.
    const MidEpochRun second =
        train_mid_epoch(data, dir / ("resumed" + tag), {3, epoch}, static_cast<double>(stop_at));
    ASSERT_EQ(second.batches.size(), static_cast<size_t>(21 - stop_at));
    for (size_t i = 0; i < second.batches.size(); ++i) {
      EXPECT_TRUE(test::same_tensor(second.batches[i], straight.batches[stop_at + i]))
          << "batch " << stop_at + i;
    }
    ASSERT_EQ(second.parameters.size(), straight.parameters.size());
    for (size_t i = 0; i < straight.parameters.size(); ++i) {
      EXPECT_TRUE(torch::equal(second.parameters[i], straight.parameters[i])) << "parameter " << i;
    }
    EXPECT_EQ(second.state.get_int("manager/iteration"), 21);
    EXPECT_EQ(second.state.get_int("state/updater/iterator/epoch"), 2);
    EXPECT_EQ(second.state.get_int("state/updater/iterator/position"), 7);
  }
}

}  // namespace
}  // namespace tth
