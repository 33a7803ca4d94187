#include "support.h"

namespace tth {
namespace {

using test::run_empty;
using test::same_tensor;

TEST(TorchTrainerHook, CountsIterationsAndEpochs) {
  TorchTrainerHook hook{HookOptions(2.5)};
  EXPECT_EQ(hook.iteration(), 0);
  EXPECT_FALSE(hook.is_new_epoch());
  std::vector<int64_t> new_epochs;
  for (int i = 0; i < 10; ++i) {
    hook.run_iteration([] {});
    if (hook.is_new_epoch()) new_epochs.push_back(hook.iteration());
  }
  EXPECT_EQ(new_epochs, (std::vector<int64_t>{3, 5, 8, 10}));
  EXPECT_EQ(hook.epoch(), 4);
  EXPECT_DOUBLE_EQ(hook.epoch_detail(), 4.0);
  EXPECT_DOUBLE_EQ(hook.previous_epoch_detail(), 3.6);
}

TEST(TorchTrainerHook, StopTriggerIsEvaluatedOncePerIteration) {
  int evaluations = 0;
  auto stop = std::make_shared<FunctionTrigger>([&](const TorchTrainerHook& hook) {
    ++evaluations;
    return hook.iteration() >= 3;
  });
  TorchTrainerHook hook{HookOptions(10).stop_trigger(stop)};
  while (!hook.done()) {
    EXPECT_FALSE(hook.done());  // a second look at the same iteration changes nothing
    hook.run_iteration([] {});
  }
  EXPECT_EQ(hook.iteration(), 3);
  EXPECT_EQ(evaluations, 3);  // iterations 1, 2, 3 (an IntervalTrigger never fires at 0)
}

TEST(TorchTrainerHook, IntervalStopTriggerStopsAtTheBoundary) {
  TorchTrainerHook hook{HookOptions(3).stop_trigger({2, epoch})};
  while (!hook.done()) hook.run_iteration([] {});
  EXPECT_EQ(hook.iteration(), 6);
  ASSERT_TRUE(hook.training_length());
  EXPECT_EQ(hook.training_length()->period, 2);
}

TEST(TorchTrainerHook, ObservationHoldsTheLastIterationUntilTheNextBegins) {
  TorchTrainerHook hook{HookOptions(1)};
  hook.run_iteration([] { report("a", 1.0); });
  EXPECT_EQ(hook.observation().at("a").value(), 1.0);
  report("outside", 2.0);  // between iterations nothing is active
  EXPECT_EQ(hook.observation().count("outside"), 0u);
  hook.run_iteration([] { report("b", 2.0); });
  EXPECT_EQ(hook.observation().count("a"), 0u);
}

TEST(TorchTrainerHook, BadOptionsAndRegistrationsAreRejected) {
  EXPECT_THROW_WITH(TorchTrainerHook{HookOptions(0)}, Error,
                    "HookOptions: iters_per_epoch must be finite and > 0, got 0");
  EXPECT_THROW_WITH(TorchTrainerHook{HookOptions(-3)}, Error, "got -3");
  EXPECT_THROW_WITH(TorchTrainerHook{HookOptions(1).out("")}, Error, "out must not be empty");
  TorchTrainerHook hook{HookOptions(1)};
  torch::nn::Linear model(2, 2);
  hook.add_model("main", model);
  EXPECT_THROW_WITH(hook.add_model("main", model), Error,
                    "add_model: name must be unique, got 'main' again");
  EXPECT_THROW_WITH(hook.add_model("a/b", model), Error,
                    "add_model: name must not contain '/', got 'a/b'");
  EXPECT_THROW_WITH(hook.add_model("x", std::shared_ptr<torch::nn::Module>()), Error,
                    "add_model: model must not be null");
  EXPECT_THROW_WITH(hook.add_state("s", nullptr), Error, "add_state: object must not be null");
  run_empty(hook, 1);
  EXPECT_THROW_WITH(hook.add_model("late", model), Error, "training has started");
  EXPECT_THROW_WITH(hook.end_iteration(), Error, "no iteration was begun");
}

// A state object and an extension with state, to check that both travel.
struct Counter : Extension {
  int64_t calls = 0;
  void operator()(TorchTrainerHook&) override { ++calls; }
  StateDict state_dict() const override {
    StateDict state;
    state.set_int("calls", calls);
    state.set("note", std::string("{\"json\": true}"));
    return state;
  }
  void load_state_dict(const StateDict& state) override { calls = state.get_int("calls"); }
};

struct Manager {
  // Its own out directory per seed: a source and a target manager live side by side, and
  // one output directory serves one run at a time.
  explicit Manager(int seed)
      : hook(HookOptions(4).stop_trigger({3, epoch}).out("result_" + std::to_string(seed))) {
    torch::manual_seed(seed);
    model = torch::nn::Sequential(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
    hook.add_model("main", model.ptr());
    hook.extend(counter, "counter", {2, iteration});
    hook.extend(std::make_shared<Counter>(), "triggered", std::make_shared<MaxValueTrigger>("v"));
  }
  void train(int n) {
    for (int i = 0; i < n; ++i) {
      hook.run_iteration([&] {
        model->forward(torch::randn({5, 3}));  // updates BatchNorm running stats (buffers)
        report("v", static_cast<double>(i % 3));
      });
    }
  }
  std::shared_ptr<Counter> counter = std::make_shared<Counter>();
  TorchTrainerHook hook;
  torch::nn::Sequential model{nullptr};
};

TEST(TorchTrainerHook, StateRoundTripRestoresEverything) {
  Manager source(1);
  source.train(6);
  const StateDict saved = source.hook.state_dict();
  for (const char* key :
       {"manager/iteration", "manager/epoch", "manager/epoch_detail", "manager/elapsed_time",
        "stop_trigger/previous_iteration", "extensions/counter/calls", "extensions/counter/note",
        "extension_triggers/counter/previous_iteration", "extension_triggers/triggered/best",
        "models/main/0.weight", "models/main/1.running_mean",
        "models/main/1.num_batches_tracked"}) {
    EXPECT_TRUE(saved.contains(key)) << key;
  }

  Manager target(2);  // other weights
  ASSERT_FALSE(same_tensor(target.model->parameters()[0], source.model->parameters()[0]));
  target.hook.load_state_dict(saved);
  EXPECT_EQ(target.hook.iteration(), 6);
  EXPECT_EQ(target.hook.epoch(), 1);
  EXPECT_EQ(target.counter->calls, 3);
  const StateDict restored = target.hook.state_dict();
  for (const auto& [key, value] : saved) {
    if (key == "manager/elapsed_time") continue;
    ASSERT_TRUE(restored.contains(key)) << key;
    EXPECT_EQ(describe(restored.at(key)), describe(value)) << key;
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      EXPECT_TRUE(same_tensor(restored.tensor(key), *tensor)) << key;
    } else {
      EXPECT_EQ(restored.text(key), std::get<std::string>(value)) << key;
    }
  }
  EXPECT_GE(target.hook.elapsed_time(), saved.get_double("manager/elapsed_time"));
}

TEST(TorchTrainerHook, FailedLoadChangesNothing) {
  Manager source(1);
  source.train(5);
  Manager target(2);
  target.train(1);
  StateDict before;  // a deep copy: state_dict() returns views of the live tensors
  for (const auto& [key, value] : target.hook.state_dict()) {
    const auto* tensor = std::get_if<at::Tensor>(&value);
    before.set(key, tensor != nullptr ? StateValue(tensor->clone()) : value);
  }
  auto unchanged = [&] {
    const StateDict now = target.hook.state_dict();
    for (const auto& [key, value] : before) {
      if (key == "manager/elapsed_time") continue;
      if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
        EXPECT_TRUE(same_tensor(now.tensor(key), *tensor)) << key;
      }
    }
  };

  StateDict missing = source.hook.state_dict();
  missing.erase("extensions/counter/calls");
  EXPECT_THROW_WITH(target.hook.load_state_dict(missing), StateError,
                    "TorchTrainerHook::load_state_dict: key 'extensions/counter/calls': is "
                    "missing from the loaded state");
  unchanged();

  StateDict extra = source.hook.state_dict();
  extra.set_int("extensions/gone/calls", 1);
  EXPECT_THROW_WITH(target.hook.load_state_dict(extra), StateError,
                    "TorchTrainerHook::load_state_dict: key 'extensions/gone/calls': is not "
                    "expected: nothing registered here saves 'extensions/gone'");
  unchanged();

  StateDict shape = source.hook.state_dict();
  shape.set("models/main/0.weight", at::zeros({3, 4}));  // checked before anything loads
  EXPECT_THROW_WITH(target.hook.load_state_dict(shape), StateError,
                    "TorchTrainerHook::load_state_dict: key 'models/main/0.weight': holds "
                    "Float[3, 4] but Float[4, 3] is expected");
  unchanged();

  StateDict type = source.hook.state_dict();
  type.set("manager/iteration", at::scalar_tensor(5.0, at::kDouble));
  EXPECT_THROW_WITH(target.hook.load_state_dict(type), StateError,
                    "TorchTrainerHook::load_state_dict: key 'manager/iteration': holds Double[] "
                    "but Long[] is expected");
  unchanged();
  EXPECT_EQ(target.hook.iteration(), 1);
}

TEST(TorchTrainerHook, AComponentFailingToLoadLeavesThePreviousState) {
  struct Fragile : Extension {
    StateDict state_dict() const override {
      StateDict state;
      state.set_int("x", 0);
      return state;
    }
    void load_state_dict(const StateDict& state) override {
      if (state.get_int("x") == 1) throw std::runtime_error("cannot take x = 1");
    }
  };
  Manager source(1);
  source.train(3);
  Manager target(2);
  target.hook.extend(std::make_shared<Fragile>(),
                     ExtendOptions().name("fragile").priority(priority::kReader));
  StateDict state = source.hook.state_dict();
  state.set_int("extensions/fragile/x", 1);
  state.set("extension_triggers/fragile/previous_iteration", at::scalar_tensor(3, at::kLong));
  state.set("extension_triggers/fragile/previous_epoch_detail",
            at::scalar_tensor(0.75, at::kDouble));
  const at::Tensor weight = target.model->parameters()[0].clone();
  EXPECT_THROW_WITH(target.hook.load_state_dict(state), std::runtime_error, "cannot take x = 1");
  EXPECT_EQ(target.hook.iteration(), 0);
  EXPECT_EQ(target.counter->calls, 0);  // loaded before "fragile" failed, then put back
  EXPECT_TRUE(same_tensor(target.model->parameters()[0], weight));
}

TEST(TorchTrainerHook, NonStrictLoadSkipsIncompleteComponentsAndExtraKeys) {
  Manager source(1);
  source.train(5);
  StateDict partial = source.hook.state_dict();
  partial.erase("extensions/counter/calls");
  partial.erase("models/main/0.bias");
  partial.set_int("extensions/gone/calls", 9);
  Manager target(2);
  const at::Tensor bias = target.model->named_parameters()["0.bias"].clone();
  test::CapturedWarnings warnings;
  const IncompatibleKeys left_out = target.hook.load_state_dict(partial, /*strict=*/false);
  EXPECT_EQ(target.hook.iteration(), 5);
  EXPECT_EQ(target.counter->calls, 0);  // an incomplete extension state: kept whole
  // A model loads key by key: the missing bias keeps its value, the weight is loaded.
  EXPECT_TRUE(same_tensor(target.model->named_parameters()["0.bias"], bias));
  EXPECT_TRUE(same_tensor(target.model->named_parameters()["0.weight"],
                          source.model->named_parameters()["0.weight"]));
  // In the order the components were registered: the model, then the extension, whose
  // keys all keep their values (a partial state is not loaded at all).
  EXPECT_EQ(left_out.missing_keys,
            (std::vector<std::string>{"models/main/0.bias", "extensions/counter/calls",
                                      "extensions/counter/note"}));
  EXPECT_EQ(left_out.unexpected_keys, (std::vector<std::string>{"extensions/gone/calls"}));
  ASSERT_EQ(warnings.messages().size(), 1u);
  EXPECT_EQ(warnings.messages()[0],
            "TorchTrainerHook::load_state_dict: non-strict load kept the current values of 3 "
            "missing key(s) [models/main/0.bias, extensions/counter/calls, "
            "extensions/counter/note] and ignored 1 unexpected key(s) [extensions/gone/calls]");
  // A strict load of a complete state leaves nothing out and says nothing.
  EXPECT_TRUE(target.hook.load_state_dict(source.hook.state_dict()).empty());
  EXPECT_EQ(warnings.messages().size(), 1u);
}

TEST(TorchTrainerHook, OptionsReadBackAsSet) {
  const HookOptions options = HookOptions(2.5).out("dir").stop_trigger({3, epoch});
  EXPECT_EQ(options.iters_per_epoch(), 2.5);
  EXPECT_EQ(options.out(), "dir");
  EXPECT_TRUE(options.stop_trigger().is_set());
  EXPECT_EQ(HookOptions(1).out(), "result");
  EXPECT_FALSE(HookOptions(1).stop_trigger().is_set());
}

}  // namespace
}  // namespace tth
