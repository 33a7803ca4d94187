// Evaluator, FailOnNonNumber, MicroAverage, observe_value and observe_lr.
#include <limits>

#include "support.h"
#include "tth/batch_iterator.h"
#include "tth/extensions/evaluator.h"
#include "tth/extensions/fail_on_non_number.h"
#include "tth/extensions/micro_average.h"
#include "tth/extensions/observe_value.h"

namespace tth {
namespace {

using test::run_empty;

// Batches of one column holding 0, 1, 2, ... split into batches of `sizes`.
BatchLoop ramp_batches(std::vector<int64_t> sizes) {
  return [sizes](const std::function<void(const Batch&)>& visit) {
    int64_t start = 0;
    for (int64_t size : sizes) {
      at::Tensor data = torch::arange(start, start + size, torch::kDouble).unsqueeze(1);
      visit(Batch(data, torch::zeros({size}, torch::kLong)));
      start += size;
    }
  };
}

// Reports the batch's mean value as "main/loss" and its size as "main/size".
void report_mean(const Batch& batch) {
  report("main/loss", batch.data.mean());
  report("main/size", static_cast<double>(batch.data.size(0)));
}

// Records the value of `key` in the observation after each iteration (at reader priority),
// as iteration -> value.
std::shared_ptr<Extension> record(const std::string& key, std::map<int64_t, double>* seen) {
  return make_extension([key, seen](TorchTrainerHook& hook) {
    auto found = hook.observation().find(key);
    if (found != hook.observation().end()) (*seen)[hook.iteration()] = found->second.value();
  });
}

using Seen = std::map<int64_t, double>;

// ---- Evaluator ----

TEST(Evaluator, AveragesPerBatchOverUnevenBatches) {
  torch::nn::Linear model(1, 1);
  Evaluator evaluator(ramp_batches({3, 3, 1}), model.ptr(), report_mean);
  const std::map<std::string, double> result = evaluator.evaluate();
  // Batch means 1, 4 and 6: Chainer's mean of the batch means (11/3), not the mean of the
  // examples (3).
  EXPECT_EQ(result, (std::map<std::string, double>{{"validation/main/loss", (1.0 + 4.0 + 6.0) / 3},
                                                   {"validation/main/size", 7.0 / 3}}));
  // A second pass starts afresh.
  EXPECT_EQ(evaluator.evaluate(), result);
}

TEST(Evaluator, OverABatchIteratorEachCallIsOneFullPass) {
  torch::nn::Linear model(1, 1);
  const at::Tensor values = torch::arange(0, 7, torch::kDouble).unsqueeze(1);
  auto iterator = std::make_shared<BatchIterator>(
      7,
      [&](const std::vector<size_t>& indices) {
        std::vector<int64_t> rows(indices.begin(), indices.end());
        return Batch(values.index_select(0, torch::tensor(rows)), torch::zeros({1}));
      },
      BatchIteratorOptions(3).shuffle(false));
  Evaluator evaluator(iterator, model.ptr(), report_mean);
  const std::map<std::string, double> expected{{"validation/main/loss", (1.0 + 4.0 + 6.0) / 3},
                                               {"validation/main/size", 7.0 / 3}};
  EXPECT_EQ(evaluator.evaluate(), expected);
  // A pass left half done (the iterator used elsewhere) does not shorten the next one.
  ASSERT_TRUE(iterator->next().has_value());
  EXPECT_EQ(evaluator.evaluate(), expected);
  EXPECT_THROW(Evaluator(std::shared_ptr<BatchIterator>(), model.ptr(), report_mean), Error);
}

TEST(Evaluator, AKeyReportedBySomeBatchesIsAveragedOverThose) {
  torch::nn::Linear model(1, 1);
  Evaluator evaluator(ramp_batches({2, 2, 2}), model.ptr(), [](const Batch& batch) {
    const double first = batch.data[0][0].item<double>();
    if (first != 2) report("main/sometimes", first);
  });
  EXPECT_EQ(evaluator.evaluate().at("validation/main/sometimes"), (0.0 + 4.0) / 2);
}

TEST(Evaluator, ReportsUnderTheRegisteredName) {
  torch::nn::Linear model(1, 1);
  auto make = [&](EvaluatorOptions options = {}) {
    return std::make_shared<Evaluator>(ramp_batches({2}), model.ptr(), report_mean, options);
  };
  auto plain = make();
  auto renamed = make();
  auto duplicate = make();
  auto own_default = make(EvaluatorOptions().name("val"));
  EXPECT_EQ(own_default->prefix(), "val");  // before registration: options.name

  TorchTrainerHook hook{HookOptions(2)};
  EXPECT_EQ(hook.extend(plain), "validation");
  EXPECT_EQ(hook.extend(renamed, ExtendOptions().name("test")), "test");
  EXPECT_EQ(hook.extend(duplicate), "validation_1");
  EXPECT_EQ(hook.extend(own_default), "val");
  run_empty(hook, 1);
  EXPECT_EQ(hook.observation().count("validation/main/loss"), 0u);  // {1, epoch} by default
  run_empty(hook, 1);
  for (const char* prefix : {"validation", "test", "validation_1", "val"}) {
    const std::string key = std::string(prefix) + "/main/loss";
    ASSERT_EQ(hook.observation().count(key), 1u) << key;
    EXPECT_EQ(hook.observation().at(key).value(), 0.5) << key;
  }
  EXPECT_EQ(renamed->prefix(), "test");
  EXPECT_EQ(renamed->evaluate().count("test/main/size"), 1u);
}

// A model with a submodule the user keeps in eval mode (frozen statistics).
struct TwoPart : torch::nn::Module {
  TwoPart() {
    first = register_module("first", torch::nn::Linear(1, 1));
    frozen = register_module("frozen", torch::nn::Linear(1, 1));
  }
  torch::nn::Linear first{nullptr}, frozen{nullptr};
};

TEST(Evaluator, RunsInEvalModeAndRestoresEachModuleMode) {
  auto model = std::make_shared<TwoPart>();
  std::vector<bool> modes_seen;
  Evaluator evaluator(ramp_batches({1, 1}), model, [&](const Batch&) {
    modes_seen.push_back(model->is_training() || model->first->is_training() ||
                         model->frozen->is_training());
  });

  model->train();
  model->frozen->eval();
  evaluator.evaluate();
  EXPECT_EQ(modes_seen, (std::vector<bool>{false, false}));
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(model->first->is_training());
  EXPECT_FALSE(model->frozen->is_training());

  model->eval();
  modes_seen.clear();
  evaluator.evaluate();
  EXPECT_EQ(modes_seen, (std::vector<bool>{false, false}));
  EXPECT_FALSE(model->is_training());
  EXPECT_FALSE(model->first->is_training());
}

TEST(Evaluator, RestoresTheModeAndGradModeWhenEvalFunctionThrows) {
  auto model = std::make_shared<TwoPart>();
  model->train();
  int calls = 0;
  Evaluator evaluator(ramp_batches({1, 1, 1}), model, [&](const Batch&) {
    if (++calls == 2) throw std::runtime_error("bad batch");
  });
  EXPECT_THROW_WITH(evaluator.evaluate(), std::runtime_error, "bad batch");
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(model->first->is_training());
  EXPECT_TRUE(model->frozen->is_training());
  EXPECT_TRUE(torch::GradMode::is_enabled());
}

TEST(Evaluator, RecordsNoGradients) {
  torch::nn::Linear model(1, 1);
  bool grad_mode = true;
  bool output_requires_grad = true;
  Evaluator evaluator(ramp_batches({2}), model.ptr(), [&](const Batch& batch) {
    grad_mode = torch::GradMode::is_enabled();
    at::Tensor output = model->forward(batch.data.to(torch::kFloat));
    output_requires_grad = output.requires_grad();
    report("main/loss", output.sum());
  });
  evaluator.evaluate();
  EXPECT_FALSE(grad_mode);
  EXPECT_FALSE(output_requires_grad);
  EXPECT_TRUE(torch::GradMode::is_enabled());
  EXPECT_TRUE(model->weight.requires_grad());
}

TEST(Evaluator, MaxValueTriggerFiresInTheSameIteration) {
  // Accuracies of successive passes; new maxima at passes 0, 1 and 3.
  const std::vector<double> accuracies = {0.5, 0.7, 0.6, 0.8};
  std::size_t pass = 0;
  torch::nn::Linear model(1, 1);
  auto evaluator = std::make_shared<Evaluator>(ramp_batches({1}), model.ptr(), [&](const Batch&) {
    report("main/accuracy", accuracies.at(pass++));
  });
  TorchTrainerHook hook{HookOptions(2)};
  std::vector<int64_t> best_at;
  // Registered first: the evaluator's priority, not the order, makes its value visible.
  hook.extend(make_extension([&](TorchTrainerHook& h) { best_at.push_back(h.iteration()); }),
              "best", std::make_shared<MaxValueTrigger>("validation/main/accuracy"));
  hook.extend(evaluator);
  run_empty(hook, 8);
  EXPECT_EQ(pass, 4u);
  EXPECT_EQ(best_at, (std::vector<int64_t>{2, 4, 8}));
}

// Ten examples: data i (one column), target i % 2.
struct Ramp : torch::data::datasets::Dataset<Ramp> {
  torch::data::Example<> get(size_t index) override {
    const auto i = static_cast<int64_t>(index);
    return {torch::full({1}, static_cast<float>(i)), torch::tensor(i % 2)};
  }
  torch::optional<size_t> size() const override { return 10; }
};

TEST(Evaluator, WorksWithDataLoaders) {
  torch::nn::Linear model(1, 1);
  auto eval_fn = [](const Batch& batch) {
    ASSERT_EQ(batch.data.dim(), 2);  // stacked
    report("main/loss", batch.data.mean());
    report("main/odd", batch.target.to(torch::kDouble).mean());
  };
  // Batches 0-3, 4-7, 8-9: means 1.5, 5.5, 8.5; odd fractions 0.5, 0.5, 0.5.
  const std::map<std::string, double> expected = {{"validation/main/loss", (1.5 + 5.5 + 8.5) / 3},
                                                  {"validation/main/odd", 0.5}};

  auto stacked = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      Ramp().map(torch::data::transforms::Stack<>()), 4);
  Evaluator over_stacked(std::move(stacked), model.ptr(), eval_fn);
  EXPECT_EQ(over_stacked.evaluate(), expected);
  EXPECT_EQ(over_stacked.evaluate(), expected);  // every evaluation is a full pass

  auto unstacked =
      torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(Ramp(), 4);
  Evaluator over_examples(std::move(unstacked), model.ptr(), eval_fn);
  EXPECT_EQ(over_examples.evaluate(), expected);

  // In training, through the hook, over a shared loader in random order: two batches of 5
  // whose means average to 4.5 (up to float rounding, which depends on the order).
  auto shared = std::shared_ptr(torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
      Ramp().map(torch::data::transforms::Stack<>()), 5));
  TorchTrainerHook hook{HookOptions(1)};
  hook.extend(std::make_shared<Evaluator>(shared, model.ptr(), eval_fn));
  run_empty(hook, 1);
  EXPECT_NEAR(hook.observation().at("validation/main/loss").value(), 4.5, 1e-5);
  EXPECT_DOUBLE_EQ(hook.observation().at("validation/main/odd").value(), 0.5);
}

TEST(Evaluator, RejectsBadArgumentsAndEmptyPasses) {
  torch::nn::Linear model(1, 1);
  EXPECT_THROW_WITH(Evaluator(BatchLoop(), model.ptr(), report_mean), Error,
                    "Evaluator: batches must be callable");
  EXPECT_THROW_WITH(Evaluator(ramp_batches({1}), nullptr, report_mean), Error,
                    "Evaluator: model must not be null");
  EXPECT_THROW_WITH(Evaluator(ramp_batches({1}), model.ptr(), EvalFunction()), Error,
                    "Evaluator: eval_fn must be callable");
  using Loader = decltype(torch::data::make_data_loader(Ramp(), 2));
  EXPECT_THROW_WITH(Evaluator(Loader(), model.ptr(), report_mean), Error,
                    "Evaluator: loader must not be null");

  Evaluator empty(ramp_batches({}), model.ptr(), report_mean, EvaluatorOptions().name("dev"));
  EXPECT_THROW_WITH(empty.evaluate(), Error, "Evaluator 'dev': the validation data gave no batch");
  // The mode is restored after an empty pass too.
  model->train();
  EXPECT_THROW(empty.evaluate(), Error);
  EXPECT_TRUE(model->is_training());
}

// ---- FailOnNonNumber ----

struct Net : torch::nn::Module {
  Net() {
    torch::manual_seed(0);
    conv1 = register_module("conv1", torch::nn::Linear(2, 2));
    head = register_module("head", torch::nn::Linear(2, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return head->forward(conv1->forward(x)); }
  torch::nn::Linear conv1{nullptr}, head{nullptr};
};

// A hook with `model` registered as "main" and FailOnNonNumber; runs training steps.
struct Watched {
  explicit Watched(FailOnNonNumberOptions options = {}, std::string out = "result")
      : model(std::make_shared<Net>()), hook(HookOptions(10).out(out)) {
    hook.add_model("main", model);
    hook.extend(std::make_shared<FailOnNonNumber>(options));
  }
  void step(const std::function<void()>& after_backward = [] {}) {
    hook.run_iteration([&] {
      model->zero_grad();
      model->forward(torch::ones({3, 2})).sum().backward();
      after_backward();
    });
  }
  std::shared_ptr<Net> model;
  TorchTrainerHook hook;
};

TEST(FailOnNonNumber, PassesOnFiniteParametersAndGradients) {
  Watched watched;
  for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(watched.step());
  EXPECT_EQ(watched.hook.iteration(), 3);
  EXPECT_TRUE(watched.model->conv1->weight.grad().defined());
}

// Runs `statement`, expecting a NonFiniteError; returns it.
template <typename Statement>
NonFiniteError expect_non_finite(Statement statement) {
  try {
    statement();
  } catch (const NonFiniteError& error) {
    return error;
  }
  ADD_FAILURE() << "no NonFiniteError";
  return NonFiniteError("", "", false, "", -1);
}

TEST(FailOnNonNumber, NamesAParameterHoldingNaN) {
  Watched watched;
  watched.step();
  const NonFiniteError error = expect_non_finite([&] {
    watched.step([&] {
      torch::NoGradGuard no_grad;
      watched.model->head->weight[0][1] = std::numeric_limits<float>::quiet_NaN();
    });
  });
  EXPECT_EQ(std::string(error.what()),
            "FailOnNonNumber: parameter 'head.weight' of model 'main' holds NaN at iteration 2; "
            "training diverged (lower the learning rate?)");
  EXPECT_EQ(error.model(), "main");
  EXPECT_EQ(error.parameter(), "head.weight");
  EXPECT_FALSE(error.gradient());
  EXPECT_EQ(error.iteration(), 2);
  EXPECT_TRUE(watched.hook.done());  // the error ended training
}

TEST(FailOnNonNumber, NamesAGradientHoldingInf) {
  Watched watched;
  const NonFiniteError error = expect_non_finite([&] {
    watched.step([&] {
      watched.model->conv1->bias.mutable_grad()[1] = std::numeric_limits<float>::infinity();
    });
  });
  EXPECT_THAT(std::string(error.what()),
              ::testing::HasSubstr("gradient of parameter 'conv1.bias' of model 'main' holds "
                                   "Inf at iteration 1"));
  EXPECT_EQ(error.parameter(), "conv1.bias");
  EXPECT_TRUE(error.gradient());
}

TEST(FailOnNonNumber, ChecksEveryRegisteredModel) {
  Watched watched;
  auto aux = std::make_shared<Net>();
  watched.hook.add_model("aux", aux);
  {
    torch::NoGradGuard no_grad;
    aux->conv1->weight.fill_(-std::numeric_limits<float>::infinity());
  }
  const NonFiniteError error = expect_non_finite([&] { watched.step(); });
  EXPECT_THAT(std::string(error.what()),
              ::testing::HasSubstr("parameter 'conv1.weight' of model 'aux' holds Inf"));
}

// The check sums each tensor; a sum that overflows is no failure when every element is finite.
TEST(FailOnNonNumber, PassesOnLargeFiniteValuesWhoseSumOverflows) {
  Watched watched;
  auto fill_large = [&] {
    torch::NoGradGuard no_grad;
    watched.model->conv1->weight.fill_(std::numeric_limits<float>::max());
    watched.model->conv1->bias.mutable_grad().fill_(-std::numeric_limits<float>::max());
  };
  EXPECT_NO_THROW(watched.step(fill_large));
  ASSERT_FALSE(torch::isfinite(watched.model->conv1->weight.sum()).item<bool>());
}

// Inf and -Inf together sum to NaN; the message still says what the elements hold.
TEST(FailOnNonNumber, NamesInfWhenInfinitiesOfBothSignsCancel) {
  Watched watched;
  const NonFiniteError error = expect_non_finite([&] {
    watched.step([&] {
      torch::NoGradGuard no_grad;
      watched.model->head->weight[0][0] = std::numeric_limits<float>::infinity();
      watched.model->head->weight[0][1] = -std::numeric_limits<float>::infinity();
    });
  });
  EXPECT_EQ(error.parameter(), "head.weight");
  EXPECT_THAT(std::string(error.what()), ::testing::HasSubstr("holds Inf at iteration 1"));
}

// Models of other dtypes are checked together (double, complex) and integer buffers are not.
TEST(FailOnNonNumber, ChecksDoubleAndComplexParameters) {
  Watched watched;
  auto other = std::make_shared<torch::nn::Module>();
  at::Tensor real = other->register_parameter("real", torch::zeros({3}, torch::kDouble));
  at::Tensor complex =
      other->register_parameter("complex", torch::zeros({2}, torch::kComplexFloat));
  other->register_parameter("count", torch::zeros({2}, torch::kLong), /*requires_grad=*/false);
  watched.hook.add_model("other", other);
  EXPECT_NO_THROW(watched.step());
  {
    torch::NoGradGuard no_grad;
    complex.copy_(torch::tensor({c10::complex<float>(0, std::numeric_limits<float>::quiet_NaN()),
                                 c10::complex<float>(0, 0)}));
  }
  EXPECT_EQ(expect_non_finite([&] { watched.step(); }).parameter(), "complex");
  Watched again(FailOnNonNumberOptions(), "again");
  again.hook.add_model("other", other);
  {
    torch::NoGradGuard no_grad;
    complex.zero_();
    real[2] = std::numeric_limits<double>::infinity();
  }
  EXPECT_EQ(expect_non_finite([&] { again.step(); }).parameter(), "real");
}

TEST(FailOnNonNumber, IgnoresGradientsWhenAskedTo) {
  Watched watched(FailOnNonNumberOptions().check_gradients(false));
  auto poison_grad = [&] {
    watched.model->conv1->weight.mutable_grad().fill_(std::numeric_limits<float>::quiet_NaN());
  };
  EXPECT_NO_THROW(watched.step(poison_grad));
  EXPECT_NO_THROW(watched.step(poison_grad));
  // The values are still checked.
  const NonFiniteError error = expect_non_finite([&] {
    watched.step([&] {
      torch::NoGradGuard no_grad;
      watched.model->conv1->bias.fill_(std::numeric_limits<float>::quiet_NaN());
    });
  });
  EXPECT_EQ(error.parameter(), "conv1.bias");
  EXPECT_FALSE(error.gradient());

  Watched checking(FailOnNonNumberOptions(), "checking");
  EXPECT_EQ(expect_non_finite([&] {
              checking.step([&] {
                checking.model->conv1->weight.mutable_grad().fill_(
                    std::numeric_limits<float>::quiet_NaN());
              });
            }).parameter(),
            "conv1.weight");
}

TEST(FailOnNonNumber, DefaultsToEveryIteration) {
  FailOnNonNumber extension;
  EXPECT_EQ(extension.default_name(), "FailOnNonNumber");
  TorchTrainerHook hook{HookOptions(100)};
  auto model = std::make_shared<Net>();
  hook.add_model("main", model);
  hook.extend(std::make_shared<FailOnNonNumber>());
  run_empty(hook, 1);
  {
    torch::NoGradGuard no_grad;
    model->head->bias.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  EXPECT_THROW_WITH(run_empty(hook, 1), NonFiniteError, "at iteration 2");
}

// ---- MicroAverage ----

// Per iteration: {correct, total}; three iterations per epoch. Epoch 1: 6 / 10; epoch 2:
// 7 / 10 (the batch-mean of the ratios would be 0.583 and 0.75).
const std::vector<std::pair<double, double>> kCounts = {{2, 4}, {3, 4}, {1, 2},
                                                        {4, 4}, {1, 4}, {2, 2}};

// A hook running MicroAverage over kCounts and recording "main/accuracy" after each iteration.
struct Averaging {
  explicit Averaging(const std::string& out) : hook(HookOptions(3).out(out)) {
    hook.extend(std::make_shared<MicroAverage>("main/correct", "main/total", "main/accuracy"));
    hook.extend(record("main/accuracy", &seen));
  }
  void steps(int n) {
    for (int i = 0; i < n; ++i) {
      const auto& [correct, total] = kCounts.at(static_cast<std::size_t>(hook.iteration()));
      hook.run_iteration([&] {
        report("main/correct", torch::tensor(correct));
        report("main/total", total);
      });
    }
  }
  TorchTrainerHook hook;
  Seen seen;
};

TEST(MicroAverage, ReportsTheRatioOfSumsAtItsTrigger) {
  Averaging run("result");
  run.steps(6);
  EXPECT_EQ(run.seen, (Seen{{3, 6.0 / 10}, {6, 7.0 / 10}}));
  MicroAverage extension("a", "b", "c");
  EXPECT_EQ(extension.default_priority(), priority::kEditor);
}

TEST(MicroAverage, SkipsIterationsWithoutBothKeys) {
  TorchTrainerHook hook{HookOptions(2)};
  hook.extend(std::make_shared<MicroAverage>("n", "d", "r", TriggerRef(1, iteration)));
  Seen seen;
  hook.extend(record("r", &seen));
  hook.run_iteration([] { report({{"n", 1.0}, {"d", 2.0}}); });
  hook.run_iteration([] { report("n", 5.0); });  // no denominator: not added, no report
  hook.run_iteration([] { report({{"n", 3.0}, {"d", 4.0}}); });
  EXPECT_EQ(seen, (Seen{{1, 0.5}, {3, 0.75}}));
}

TEST(MicroAverage, ResumedMidIntervalReportsWhatAnUninterruptedRunDoes) {
  Averaging straight("straight");
  straight.steps(6);
  StateDict state;
  {
    Averaging first("first");
    first.steps(4);  // one iteration into the second epoch
    state = first.hook.state_dict();
  }
  Averaging resumed("resumed");
  resumed.hook.load_state_dict(state);
  resumed.steps(2);
  // With the sums but without its trigger's state, the trigger would fire at iteration 5
  // (a fresh IntervalTrigger sees a crossed boundary); without the sums it would report 3/6.
  EXPECT_EQ(resumed.seen, (Seen{{6, straight.seen.at(6)}}));
  EXPECT_EQ(straight.seen.at(6), 7.0 / 10);
}

TEST(MicroAverage, AZeroDenominatorIsAnErrorNamingTheKeys) {
  TorchTrainerHook hook{HookOptions(2)};
  hook.extend(std::make_shared<MicroAverage>("main/correct", "main/total", "main/accuracy"));
  hook.run_iteration([] { report({{"main/correct", 0.0}, {"main/total", 0.0}}); });
  EXPECT_THROW_WITH(hook.run_iteration([] {
    report({{"main/correct", 0.0}, {"main/total", 0.0}});
  }),
                    Error, "MicroAverage: the sum of 'main/total' over the interval is 0");
}

TEST(MicroAverage, RejectsBadArguments) {
  EXPECT_THROW_WITH(MicroAverage("", "d", "r"), Error, "MicroAverage: numerator_key");
  EXPECT_THROW_WITH(MicroAverage("n", "", "r"), Error, "MicroAverage: denominator_key");
  EXPECT_THROW_WITH(MicroAverage("n", "d", ""), Error, "MicroAverage: result_key");
  EXPECT_THROW_WITH(MicroAverage("n", "d", "r", TriggerRef::never()), Error,
                    "MicroAverage: trigger must fire sometimes");
}

// ---- observe_value, observe_lr ----

TEST(ObserveValue, ReportsEveryEpochForReadersOfTheSameIteration) {
  TorchTrainerHook hook{HookOptions(2)};
  Seen seen;
  hook.extend(record("twice", &seen));  // registered first, called after (kReader)
  auto observer = observe_value(
      "twice", [](TorchTrainerHook& h) { return 2.0 * static_cast<double>(h.iteration()); });
  EXPECT_EQ(observer->default_priority(), priority::kWriter);
  EXPECT_EQ(hook.extend(observer), "observe_value");
  run_empty(hook, 5);
  EXPECT_EQ(seen, (Seen{{2, 4.0}, {4, 8.0}}));
}

TEST(ObserveValue, TakesATrigger) {
  TorchTrainerHook hook{HookOptions(100)};
  Seen seen;
  hook.extend(observe_value("one", [](TorchTrainerHook&) { return 1.0; }, {3, iteration}));
  hook.extend(record("one", &seen));
  run_empty(hook, 6);
  EXPECT_EQ(seen, (Seen{{3, 1.0}, {6, 1.0}}));
}

TEST(ObserveValue, RejectsBadArguments) {
  EXPECT_THROW_WITH(observe_value("", [](TorchTrainerHook&) { return 0.0; }), Error,
                    "observe_value: key must not be empty");
  EXPECT_THROW_WITH(observe_value("k", nullptr), Error, "observe_value: fn must be callable");
  EXPECT_THROW_WITH(observe_lr(""), Error, "observe_lr: optimizer_name must not be empty");
}

TEST(ObserveLr, ReportsTheFirstParamGroupsLearningRate) {
  torch::nn::Linear model(2, 1);
  auto sgd =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  auto adam =
      std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.003));
  TorchTrainerHook hook{HookOptions(1)};
  hook.add_optimizer("main", sgd);
  hook.add_optimizer("aux", adam);
  Seen lr, aux_lr;
  EXPECT_EQ(hook.extend(observe_lr()), "observe_lr");
  hook.extend(observe_lr("aux", "aux/lr", {1, iteration}));
  hook.extend(record("lr", &lr));
  hook.extend(record("aux/lr", &aux_lr));
  run_empty(hook, 1);
  sgd->param_groups()[0].options().set_lr(0.05);
  run_empty(hook, 1);
  EXPECT_EQ(lr, (Seen{{1, 0.1}, {2, 0.05}}));
  EXPECT_EQ(aux_lr, (Seen{{1, 0.003}, {2, 0.003}}));
}

TEST(ObserveLr, AMissingOptimizerIsAnErrorNamingItAndTheRegisteredOnes) {
  torch::nn::Linear model(2, 1);
  auto sgd =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  TorchTrainerHook hook{HookOptions(1)};
  hook.add_optimizer("main", sgd);
  hook.add_optimizer("aux", sgd);
  hook.extend(observe_lr("mian"));
  EXPECT_THROW_WITH(run_empty(hook, 1), Error,
                    "observe_lr: no optimizer named 'mian' is registered (registered: 'aux', "
                    "'main')");

  TorchTrainerHook none{HookOptions(1).out("none")};
  none.extend(observe_lr());
  EXPECT_THROW_WITH(run_empty(none, 1), Error,
                    "observe_lr: no optimizer named 'main' is registered (none is)");
}

}  // namespace
}  // namespace tth
