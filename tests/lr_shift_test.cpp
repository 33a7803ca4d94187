// The parameter shifts (tth/extensions/*_shift.h) and LRSchedulerStep: the values they put
// into the optimizer, call after call, against Chainer's formulas written out here, on every
// parameter group; resume; errors.
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "support.h"
#include "tth/extensions/exponential_shift.h"
#include "tth/extensions/inverse_shift.h"
#include "tth/extensions/linear_shift.h"
#include "tth/extensions/lr_scheduler_step.h"
#include "tth/extensions/multistep_shift.h"
#include "tth/extensions/parameter_shift.h"
#include "tth/extensions/polynomial_shift.h"
#include "tth/extensions/step_shift.h"
#include "tth/extensions/warmup_shift.h"

namespace tth {
namespace {

using test::run_empty;
using torch::optim::Optimizer;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamGroup;
using torch::optim::SGD;
using torch::optim::SGDOptions;

constexpr int kIterations = 10;  // the length of every schedule checked
constexpr int kResumeAt = 4;     // where the interrupted runs stop

// An SGD optimizer with two parameter groups of different learning rates (momentum 0.9).
std::shared_ptr<SGD> two_group_sgd(double lr0 = 0.1, double lr1 = 0.5) {
  std::vector<OptimizerParamGroup> groups;
  for (double lr : {lr0, lr1}) {
    groups.emplace_back(std::vector<torch::Tensor>{torch::zeros({2}, torch::requires_grad())},
                        std::make_unique<SGDOptions>(SGDOptions(lr).momentum(0.9)));
  }
  return std::make_shared<SGD>(std::move(groups), SGDOptions(lr0).momentum(0.9));
}

// A hook of its own output directory (so that several may live at once).
std::unique_ptr<TorchTrainerHook> make_hook(const std::string& out, double iters_per_epoch = 1) {
  return std::make_unique<TorchTrainerHook>(HookOptions(iters_per_epoch).out(out));
}

// The learning rate of every parameter group, and of the defaults last.
std::vector<double> lrs(const Optimizer& optimizer) {
  std::vector<double> values;
  for (const auto& group : optimizer.param_groups()) values.push_back(group.options().get_lr());
  values.push_back(optimizer.defaults().get_lr());
  return values;
}

// The learning rate all groups share; fails the test where they differ.
double shared_lr(const Optimizer& optimizer) {
  const std::vector<double> values = lrs(optimizer);
  for (double value : values) EXPECT_EQ(value, values.front()) << "the groups differ";
  return values.front();
}

// A shift under test, made for `optimizer` (null: the hook's "main"), and the values Chainer's
// formula gives after initialize (t = 0) and after each of kIterations calls.
struct Case {
  std::string name;
  std::function<std::shared_ptr<ParameterShift>(std::shared_ptr<Optimizer>)> make;
  std::vector<double> expected;
};

std::vector<double> sequence(const std::function<double(int)>& value) {
  std::vector<double> values;
  for (int t = 0; t <= kIterations; ++t) values.push_back(value(t));
  return values;
}

// Chainer's shifts, each computed as Chainer's code computes it. The optimizer's own lr is
// 0.1 (group 0), which an unset init takes.
std::vector<Case> cases() {
  std::vector<Case> all;
  // ExponentialShift: init * rate^t; stops at the target.
  all.push_back({"exponential decay, init from the optimizer",
                 [](auto opt) {
                   return std::make_shared<ExponentialShift>(
                       0.5, ExponentialShiftOptions().optimizer(opt));
                 },
                 sequence([](int t) { return 0.1 * std::pow(0.5, t); })});
  all.push_back({"exponential decay to a target",
                 [](auto opt) {
                   return std::make_shared<ExponentialShift>(
                       0.5, ExponentialShiftOptions().init(0.2).target(0.03).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.2 * std::pow(0.5, t);
                   if (value / 0.03 < 1) value = 0.03;
                   return t == 0 ? 0.2 : value;
                 })});
  all.push_back({"exponential growth to a target",
                 [](auto opt) {
                   return std::make_shared<ExponentialShift>(
                       2.0, ExponentialShiftOptions().init(0.01).target(0.1).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.01 * std::pow(2.0, t);
                   if (value / 0.1 > 1) value = 0.1;
                   return t == 0 ? 0.01 : value;
                 })});
  // StepShift: init * gamma^floor(t / step).
  all.push_back({"step decay",
                 [](auto opt) {
                   return std::make_shared<StepShift>(0.5, 3, StepShiftOptions().optimizer(opt));
                 },
                 sequence([](int t) { return 0.1 * std::pow(0.5, std::floor(t / 3.0)); })});
  all.push_back({"step growth to a target",
                 [](auto opt) {
                   return std::make_shared<StepShift>(
                       3.0, 2, StepShiftOptions().init(0.01).target(0.2).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.01 * std::pow(3.0, std::floor(t / 2.0));
                   if (value / 0.2 > 1) value = 0.2;
                   return t == 0 ? 0.01 : value;
                 })});
  // MultistepShift: Chainer's loop, one milestone passed per call at most.
  {
    const std::vector<int64_t> milestones{2, 5, 6};
    std::vector<double> expected{0.1};
    size_t current_step = 0;
    for (int t = 1; t <= kIterations; ++t) {
      if (current_step < milestones.size() && t >= milestones[current_step]) ++current_step;
      expected.push_back(0.1 * std::pow(0.1, static_cast<double>(current_step)));
    }
    all.push_back({"multistep decay",
                   [milestones](auto opt) {
                     return std::make_shared<MultistepShift>(
                         0.1, milestones, MultistepShiftOptions().optimizer(opt));
                   },
                   expected});
  }
  all.push_back({"multistep with init",
                 [](auto opt) {
                   return std::make_shared<MultistepShift>(
                       2.0, std::vector<int64_t>{1, 9},
                       MultistepShiftOptions().init(0.3).optimizer(opt));
                 },
                 sequence([](int t) { return t == 0  ? 0.3
                                             : t < 9 ? 0.6
                                                     : 1.2; })});
  // LinearShift: v1 up to t1, v2 from t2 on, linear in between.
  all.push_back({"linear",
                 [](auto opt) {
                   return std::make_shared<LinearShift>(std::pair{0.1, 0.5},
                                                        std::pair<int64_t, int64_t>{2, 6},
                                                        LinearShiftOptions().optimizer(opt));
                 },
                 sequence([](int t) {
                   if (t <= 2) return 0.1;
                   if (t >= 6) return 0.5;
                   return 0.1 + (t - 2) / 4.0 * (0.5 - 0.1);
                 })});
  // WarmupShift: from warmup_start to init over warmup_iter calls, then left alone.
  all.push_back({"warmup from the optimizer's value",
                 [](auto opt) {
                   return std::make_shared<WarmupShift>(4, 0.5,
                                                        WarmupShiftOptions().optimizer(opt));
                 },
                 sequence([](int t) {
                   if (t > 4) return 0.5;
                   return (t * 0.5 + (4 - t) * 0.1) / 4;
                 })});
  all.push_back({"warmup from warmup_start",
                 [](auto opt) {
                   return std::make_shared<WarmupShift>(
                       5, 0.2, WarmupShiftOptions().warmup_start(0.001).optimizer(opt));
                 },
                 sequence([](int t) {
                   if (t > 5) return 0.2;
                   return (t * 0.2 + (5 - t) * 0.001) / 5;
                 })});
  // PolynomialShift: init * max(1 - t / max_count, 0)^rate; target / value compared.
  all.push_back({"polynomial decay to zero",
                 [](auto opt) {
                   return std::make_shared<PolynomialShift>(
                       0.9, 6, PolynomialShiftOptions().optimizer(opt));
                 },
                 sequence([](int t) { return 0.1 * std::pow(std::max(1 - t / 6.0, 0.0), 0.9); })});
  all.push_back({"polynomial decay to a target",
                 [](auto opt) {
                   return std::make_shared<PolynomialShift>(
                       2.0, 8, PolynomialShiftOptions().init(0.4).target(0.05).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.4 * std::pow(std::max(1 - t / 8.0, 0.0), 2.0);
                   if (0.05 / value > 1) value = 0.05;  // 0.05 / 0 is inf: the target
                   return t == 0 ? 0.4 : value;
                 })});
  all.push_back({"polynomial growth to a target",
                 [](auto opt) {
                   return std::make_shared<PolynomialShift>(
                       -0.5, 5, PolynomialShiftOptions().target(0.2).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.1 * std::pow(std::max(1 - t / 5.0, 0.0), -0.5);
                   if (0.2 / value < 1) value = 0.2;  // 0.2 / inf is 0: the target
                   return t == 0 ? 0.1 : value;
                 })});
  // InverseShift: init * (1 + gamma t)^-power.
  all.push_back({"inverse decay",
                 [](auto opt) {
                   return std::make_shared<InverseShift>(0.5, 0.75,
                                                         InverseShiftOptions().optimizer(opt));
                 },
                 sequence([](int t) { return 0.1 * std::pow(1 + 0.5 * t, -0.75); })});
  all.push_back({"inverse decay to a target",
                 [](auto opt) {
                   return std::make_shared<InverseShift>(
                       1.0, 1.0, InverseShiftOptions().init(0.3).target(0.05).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.3 * std::pow(1 + 1.0 * t, -1.0);
                   if (value / 0.05 < 1) value = 0.05;
                   return t == 0 ? 0.3 : value;
                 })});
  all.push_back({"inverse growth to a target",
                 [](auto opt) {
                   return std::make_shared<InverseShift>(
                       0.5, -1.0, InverseShiftOptions().target(0.3).optimizer(opt));
                 },
                 sequence([](int t) {
                   double value = 0.1 * std::pow(1 + 0.5 * t, 1.0);
                   if (value / 0.3 > 1) value = 0.3;
                   return t == 0 ? 0.1 : value;
                 })});
  return all;
}

// The shared lr after initialize and after each iteration of `count`, continuing `hook`.
std::vector<double> observe(TorchTrainerHook& hook, const Optimizer& optimizer, int count) {
  std::vector<double> values;
  if (!hook.started()) {
    hook.start();
    values.push_back(shared_lr(optimizer));
  }
  for (int i = 0; i < count; ++i) {
    hook.run_iteration([] {});
    values.push_back(shared_lr(optimizer));
  }
  return values;
}

// `actual` equals `expected` from t = first_t on, as far as `actual` goes.
void expect_values(const std::vector<double>& actual, const std::vector<double>& expected,
                   size_t first_t = 0) {
  ASSERT_LE(actual.size() + first_t, expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_DOUBLE_EQ(actual[i], expected[first_t + i]) << "t = " << first_t + i;
  }
}

TEST(ParameterShift, EveryShiftFollowsChainersFormulaOnEveryParamGroup) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto optimizer = two_group_sgd();
    auto hook = make_hook("out");
    hook->add_optimizer("main", optimizer);
    auto shift = c.make(nullptr);
    hook->extend(shift);
    const std::vector<double> values = observe(*hook, *optimizer, kIterations);
    EXPECT_EQ(values.size(), c.expected.size());
    expect_values(values, c.expected);
    EXPECT_EQ(shift->t(), kIterations);
  }
}

TEST(ParameterShift, GivenOptimizerNeedsNoRegistration) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto optimizer = two_group_sgd();
    auto hook = make_hook("out");
    hook->extend(c.make(optimizer));
    const std::vector<double> values = observe(*hook, *optimizer, kIterations);
    EXPECT_EQ(values.size(), c.expected.size());
    expect_values(values, c.expected);
  }
}

// Resume into a fresh optimizer of other learning rates: a registered one has its lr
// restored with the optimizer's state, and the shift's init (taken from the optimizer in the
// first run) comes from the shift's state, not from the restored lr (Chainer's defect).
TEST(ParameterShift, ResumeContinuesTheSequenceWithARegisteredOptimizer) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    StateDict state;
    {
      auto optimizer = two_group_sgd();
      auto hook = make_hook("first");
      hook->add_optimizer("main", optimizer);
      hook->extend(c.make(nullptr));
      expect_values(observe(*hook, *optimizer, kResumeAt), c.expected);
      state = hook->state_dict();
    }
    auto optimizer = two_group_sgd(0.7, 0.9);
    auto hook = make_hook("second");
    hook->add_optimizer("main", optimizer);
    hook->extend(c.make(nullptr));
    hook->load_state_dict(state);
    hook->start();
    EXPECT_DOUBLE_EQ(shared_lr(*optimizer), c.expected[kResumeAt]) << "right after the resume";
    expect_values(observe(*hook, *optimizer, kIterations - kResumeAt), c.expected, kResumeAt + 1);
  }
}

// An optimizer that is not registered keeps its fresh lr through the load: the shift puts
// its last value back at initialize.
TEST(ParameterShift, ResumePutsTheLastValueBackIntoAnOptimizerNotRestored) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    StateDict state;
    {
      auto optimizer = two_group_sgd();
      auto hook = make_hook("first");
      hook->extend(c.make(optimizer));
      expect_values(observe(*hook, *optimizer, kResumeAt), c.expected);
      state = hook->state_dict();
    }
    auto optimizer = two_group_sgd(0.7, 0.9);
    auto hook = make_hook("second");
    auto shift = c.make(optimizer);
    hook->extend(shift);
    hook->load_state_dict(state);
    EXPECT_EQ(shift->t(), kResumeAt);
    EXPECT_EQ(lrs(*optimizer), (std::vector<double>{0.7, 0.9, 0.7}))
        << "nothing is set before initialize";
    hook->start();
    EXPECT_DOUBLE_EQ(shared_lr(*optimizer), c.expected[kResumeAt]) << "right after the resume";
    expect_values(observe(*hook, *optimizer, kIterations - kResumeAt), c.expected, kResumeAt + 1);
  }
}

TEST(ParameterShift, StateHoldsChainersKeysAndTheInit) {
  auto optimizer = two_group_sgd();
  auto hook = make_hook("out");
  hook->add_optimizer("main", optimizer);
  auto shift = std::make_shared<ExponentialShift>(0.5);
  EXPECT_EQ(hook->extend(shift), "ExponentialShift");
  StateDict fresh = shift->state_dict();
  EXPECT_EQ(fresh.get_int("_t"), 0);
  EXPECT_FALSE(fresh.get_bool("_has_last_value"));
  EXPECT_TRUE(std::isnan(fresh.get_double("_last_value")));

  observe(*hook, *optimizer, 3);
  const StateDict state = hook->state_dict();
  EXPECT_EQ(state.get_int("extensions/ExponentialShift/_t"), 3);
  EXPECT_DOUBLE_EQ(state.get_double("extensions/ExponentialShift/_last_value"), 0.1 * 0.125);
  EXPECT_DOUBLE_EQ(state.get_double("extensions/ExponentialShift/_init"), 0.1);
  EXPECT_TRUE(state.get_bool("extensions/ExponentialShift/_has_last_value"));
  ASSERT_TRUE(shift->last_value().has_value());
  EXPECT_DOUBLE_EQ(*shift->last_value(), 0.1 * 0.125);
  EXPECT_EQ(shift->init(), std::optional<double>(0.1));
}

TEST(ParameterShift, GivenInitWinsOverTheSavedOne) {
  auto optimizer = two_group_sgd();
  auto first =
      std::make_shared<ExponentialShift>(0.5, ExponentialShiftOptions().optimizer(optimizer));
  first->load_state_dict([] {
    StateDict state;
    state.set_int("_t", 2);
    state.set_double("_last_value", 0.025);
    state.set_double("_init", 0.1);
    state.set_bool("_has_last_value", true);
    return state;
  }());
  EXPECT_EQ(first->init(), 0.1);
  auto given = std::make_shared<ExponentialShift>(
      0.5, ExponentialShiftOptions().init(0.4).optimizer(optimizer));
  given->load_state_dict(first->state_dict());
  EXPECT_EQ(given->init(), 0.4);
  auto hook = make_hook("out");
  hook->extend(given);
  EXPECT_EQ(observe(*hook, *optimizer, 1), (std::vector<double>{0.025, 0.4 * 0.125}));
}

TEST(ParameterShift, NegativeCountInStateIsAStateError) {
  auto shift = std::make_shared<ExponentialShift>(0.5);
  StateDict state = shift->state_dict();
  state.set_int("_t", -1);
  EXPECT_THROW_WITH(shift->load_state_dict(state), StateError, "must be a count of calls >= 0");
}

TEST(ParameterShift, ShiftsMomentumAndWeightDecay) {
  auto optimizer = two_group_sgd();
  auto hook = make_hook("out");
  hook->add_optimizer("main", optimizer);
  hook->extend(std::make_shared<LinearShift>(std::pair{0.5, 0.9}, std::pair<int64_t, int64_t>{0, 4},
                                             LinearShiftOptions().attr("momentum")));
  hook->start();
  std::vector<std::vector<double>> momenta;
  for (int i = 0; i <= 5; ++i) {
    if (i > 0) hook->run_iteration([] {});
    std::vector<double> values;
    for (const auto& group : optimizer->param_groups()) {
      values.push_back(static_cast<const SGDOptions&>(group.options()).momentum());
    }
    values.push_back(static_cast<const SGDOptions&>(optimizer->defaults()).momentum());
    momenta.push_back(values);
    EXPECT_EQ(lrs(*optimizer), (std::vector<double>{0.1, 0.5, 0.1})) << "lr untouched";
  }
  for (int t = 0; t <= 5; ++t) {
    const double expected = t >= 4 ? 0.9 : 0.5 + t / 4.0 * (0.9 - 0.5);
    for (double value : momenta[t]) EXPECT_DOUBLE_EQ(value, expected) << "t = " << t;
  }

  auto model = torch::nn::Linear(2, 2);
  auto adamw =
      std::make_shared<torch::optim::AdamW>(model->parameters(), torch::optim::AdamWOptions(1e-3));
  auto adam_hook = make_hook("adam");
  adam_hook->add_optimizer("main", adamw);
  adam_hook->extend(std::make_shared<ExponentialShift>(
      0.1, ExponentialShiftOptions().attr("weight_decay").init(1.0)));
  adam_hook->extend(std::make_shared<StepShift>(0.5, 1, StepShiftOptions().attr("beta1")));
  run_empty(*adam_hook, 2);
  const auto& options =
      static_cast<const torch::optim::AdamWOptions&>(adamw->param_groups()[0].options());
  EXPECT_DOUBLE_EQ(options.weight_decay(), 0.01);
  EXPECT_DOUBLE_EQ(std::get<0>(options.betas()), 0.9 * 0.25);
  EXPECT_DOUBLE_EQ(options.lr(), 1e-3);
}

TEST(ParameterShift, WarmupLeavesTheValueAloneAfterwards) {
  auto optimizer = two_group_sgd();
  auto hook = make_hook("out");
  hook->add_optimizer("main", optimizer);
  hook->extend(std::make_shared<WarmupShift>(2, 0.3));
  run_empty(*hook, 2);
  EXPECT_DOUBLE_EQ(shared_lr(*optimizer), 0.3);
  for (auto& group : optimizer->param_groups()) group.options().set_lr(0.05);
  run_empty(*hook, 3);
  EXPECT_EQ(optimizer->param_groups()[0].options().get_lr(), 0.05);
}

TEST(ParameterShift, DefaultsAreChainers) {
  ExponentialShift shift(0.5);
  EXPECT_EQ(shift.default_priority(), priority::kReader);
  EXPECT_EQ(shift.default_name(), "ExponentialShift");
  EXPECT_EQ(shift.attr(), "lr");
  EXPECT_EQ(LinearShift({0, 1}, {0, 1}).default_name(), "LinearShift");
  // Every iteration: seen in the sequences above, one value per iteration with iters_per_epoch 1;
  // here with 4 iterations per epoch.
  auto optimizer = two_group_sgd();
  auto hook = make_hook("out", 4);
  hook->add_optimizer("main", optimizer);
  hook->extend(std::make_shared<ExponentialShift>(0.5));
  run_empty(*hook, 3);
  EXPECT_DOUBLE_EQ(shared_lr(*optimizer), 0.1 * 0.125);
}

TEST(ParameterShift, AttrTheOptimizerLacksIsAnError) {
  auto model = torch::nn::Linear(2, 2);
  auto adam = std::make_shared<torch::optim::Adam>(model->parameters());
  auto hook = make_hook("out");
  hook->add_optimizer("main", adam);
  hook->extend(std::make_shared<ExponentialShift>(0.5, ExponentialShiftOptions().attr("momentum")));
  EXPECT_THROW_WITH(hook->start(), Error,
                    "ExponentialShift: attr 'momentum' is not an option of optimizer "
                    "torch::optim::Adam (a shift can set its lr, weight_decay, eps, beta1, beta2)");
}

TEST(ParameterShift, MissingOptimizerIsAnErrorListingTheRegisteredOnes) {
  auto hook = make_hook("out");
  hook->add_optimizer("aux", two_group_sgd());
  hook->add_optimizer("critic", two_group_sgd());
  hook->extend(std::make_shared<StepShift>(0.5, 2));
  EXPECT_THROW_WITH(hook->start(), Error,
                    "StepShift: no optimizer was given and none is registered as 'main' "
                    "(registered: 'aux', 'critic')");

  auto empty = make_hook("empty");
  empty->extend(std::make_shared<InverseShift>(0.5, 1.0));
  EXPECT_THROW_WITH(empty->start(), Error, "(none is registered)");
}

TEST(ParameterShift, ArgumentsAreChecked) {
  EXPECT_THROW_WITH(ExponentialShift(-1), Error,
                    "ExponentialShift: rate must be finite and >= 0, got -1");
  EXPECT_THROW_WITH(InverseShift(-0.5, 1), Error,
                    "InverseShift: gamma must be finite and >= 0, got -0.5");
  EXPECT_THROW_WITH(InverseShift(0.5, std::nan("")), Error,
                    "InverseShift: power must be finite, got nan");
  EXPECT_THROW_WITH(StepShift(0.5, 0), Error, "StepShift: step must be >= 1, got 0");
  EXPECT_THROW_WITH(MultistepShift(0.1, {}), Error, "MultistepShift: step_value must not be empty");
  EXPECT_THROW_WITH(MultistepShift(0.1, {5, 3}), Error,
                    "MultistepShift: step_value must be strictly increasing, got [5, 3]");
  EXPECT_THROW_WITH(MultistepShift(0.1, {2, 2}), Error, "must be strictly increasing, got [2, 2]");
  EXPECT_THROW_WITH(MultistepShift(0.1, {0, 3}), Error,
                    "MultistepShift: step_value must hold calls >= 1, got [0, 3]");
  EXPECT_THROW_WITH(LinearShift({0.1, 0.2}, {5, 2}), Error,
                    "LinearShift: time_range must not end before it begins, got (5, 2)");
  EXPECT_THROW_WITH(WarmupShift(-1, 0.1), Error, "WarmupShift: warmup_iter must be >= 0, got -1");
  EXPECT_THROW_WITH(PolynomialShift(0.9, 0), Error,
                    "PolynomialShift: max_count must be >= 1, got 0");
  EXPECT_THROW_WITH(ExponentialShift(0.5, ExponentialShiftOptions().attr("learning_rate")), Error,
                    "ExponentialShift: attr must be one of lr, momentum, dampening, weight_decay, "
                    "eps, beta1, beta2, alpha, lr_decay, got 'learning_rate'");
  EXPECT_THROW_WITH(
      StepShift(0.5, 1, StepShiftOptions().init(std::numeric_limits<double>::infinity())), Error,
      "StepShift: init must be finite, got inf");
  EXPECT_NO_THROW(WarmupShift(0, 0.1));  // no warmup: Chainer never divides then
  EXPECT_NO_THROW(ExponentialShift(0));
}

// ---- LRSchedulerStep ----

// StepLR(step_size 2, gamma 0.1) stepped once per epoch of 2 iterations. LibTorch's StepLR
// multiplies in step() when its count of earlier steps is a nonzero multiple of step_size, so
// after k steps the lr is lr0 * 0.1^floor((k - 1) / 2) (k >= 1).
std::vector<double> step_lr_expected(double lr0, int iterations) {
  std::vector<double> values;
  for (int i = 0; i <= iterations; ++i) {
    const int k = i / 2;
    values.push_back(k == 0 ? lr0 : lr0 * std::pow(0.1, (k - 1) / 2));
  }
  return values;
}

struct SchedulerRun {
  SchedulerRun(const std::string& out, double lr0, double lr1)
      : optimizer(two_group_sgd(lr0, lr1)),
        scheduler(std::make_shared<torch::optim::StepLR>(*optimizer, 2, 0.1)),
        extension(std::make_shared<LRSchedulerStep>(scheduler)),
        hook(make_hook(out, 2)) {
    hook->add_optimizer("main", optimizer);
    hook->extend(extension);
  }
  // The lr of both groups after each of `count` iterations.
  std::vector<std::vector<double>> run(int count) {
    std::vector<std::vector<double>> values;
    for (int i = 0; i < count; ++i) {
      hook->run_iteration([] {});
      values.push_back(lrs(*optimizer));
    }
    return values;
  }
  std::shared_ptr<SGD> optimizer;
  std::shared_ptr<torch::optim::StepLR> scheduler;
  std::shared_ptr<LRSchedulerStep> extension;
  std::unique_ptr<TorchTrainerHook> hook;
};

void expect_step_lr(const std::vector<std::vector<double>>& values, int first_iteration) {
  const auto group0 = step_lr_expected(1.0, 12);
  const auto group1 = step_lr_expected(0.5, 12);
  for (size_t i = 0; i < values.size(); ++i) {
    const size_t iteration = first_iteration + i;
    EXPECT_DOUBLE_EQ(values[i][0], group0[iteration]) << "iteration " << iteration;
    EXPECT_DOUBLE_EQ(values[i][1], group1[iteration]) << "iteration " << iteration;
  }
}

TEST(LRSchedulerStep, StepsTheSchedulerEveryEpoch) {
  SchedulerRun run("out", 1.0, 0.5);
  EXPECT_EQ(run.hook->extension_names(), std::vector<std::string>{"LRSchedulerStep"});
  expect_step_lr(run.run(12), 1);
  EXPECT_EQ(run.extension->state_dict().get_int("scheduler/step_count"), 6);
}

TEST(LRSchedulerStep, ResumeContinuesTheSchedule) {
  StateDict state;
  {
    SchedulerRun first("first", 1.0, 0.5);
    expect_step_lr(first.run(5), 1);
    state = first.hook->state_dict();
  }
  EXPECT_EQ(state.get_int("extensions/LRSchedulerStep/scheduler/step_count"), 2);
  SchedulerRun second("second", 0.7, 0.9);
  second.hook->load_state_dict(state);
  EXPECT_EQ(second.extension->state_dict().get_int("scheduler/step_count"), 2);
  EXPECT_EQ(lrs(*second.optimizer), (std::vector<double>{1.0, 0.5, 0.7}))
      << "the optimizer's state holds the rates (defaults are not part of it)";
  // The third step (iteration 6) multiplies only if the count of 2 was restored.
  expect_step_lr(second.run(7), 6);
}

TEST(LRSchedulerStep, TriggerAndDefaults) {
  auto optimizer = two_group_sgd(1.0, 0.5);
  auto scheduler = std::make_shared<torch::optim::StepLR>(*optimizer, 1, 0.5);
  auto every_iteration = std::make_shared<LRSchedulerStep>(scheduler, TriggerRef(1, iteration));
  EXPECT_EQ(every_iteration->default_priority(), priority::kReader);
  auto hook = make_hook("out", 4);
  hook->add_optimizer("main", optimizer);
  hook->extend(every_iteration);
  run_empty(*hook, 3);  // steps with counts 0, 1, 2: two multiplications
  EXPECT_DOUBLE_EQ(optimizer->param_groups()[0].options().get_lr(), 0.25);

  // An unset trigger means the default, every epoch.
  LRSchedulerStep unset(scheduler, TriggerRef());
  ASSERT_TRUE(unset.default_trigger().is_set());
  EXPECT_NE(unset.default_trigger().get(), nullptr);
  EXPECT_THROW_WITH(LRSchedulerStep(nullptr), Error, "LRSchedulerStep: scheduler must not be null");
}

}  // namespace
}  // namespace tth
