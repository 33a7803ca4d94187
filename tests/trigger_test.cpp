#include "support.h"

namespace tth {
namespace {

using test::run_empty;

// Iterations (1-based, after the update) at which `trigger` fires over `n` iterations.
std::vector<int64_t> fired_at(TriggerRef trigger, double iters_per_epoch, int n) {
  TorchTrainerHook hook{HookOptions(iters_per_epoch)};
  std::vector<int64_t> fired;
  hook.extend(make_extension([&](TorchTrainerHook& h) { fired.push_back(h.iteration()); }), "rec",
              std::move(trigger));
  run_empty(hook, n);
  return fired;
}

using Seq = std::vector<int64_t>;

TEST(IntervalTrigger, IterationPeriod) {
  EXPECT_EQ(fired_at({3, iteration}, 10, 10), (Seq{3, 6, 9}));
  EXPECT_EQ(fired_at({1, iteration}, 10, 3), (Seq{1, 2, 3}));
}

TEST(IntervalTrigger, EpochPeriodWithIntegerItersPerEpoch) {
  EXPECT_EQ(fired_at({1, epoch}, 4, 12), (Seq{4, 8, 12}));
  EXPECT_EQ(fired_at({2, epoch}, 4, 12), (Seq{8}));
}

TEST(IntervalTrigger, FractionalEpochFiresOnBoundary) {
  EXPECT_EQ(fired_at({0.5, epoch}, 4, 8), (Seq{2, 4, 6, 8}));
  // 0.1 epochs of 10 iterations: floating error must not shift or drop a boundary.
  EXPECT_EQ(fired_at({0.1, epoch}, 10, 5), (Seq{1, 2, 3, 4, 5}));
  EXPECT_EQ(fired_at({0.3, epoch}, 10, 10), (Seq{3, 6, 9}));
}

TEST(IntervalTrigger, UnevenItersPerEpoch) {
  // 2.5 iterations per epoch (a dataset of 5 with batches of 2): epochs end at 2.5, 5, 7.5,
  // 10, so the epoch boundary is crossed at iterations 3, 5, 8, 10.
  EXPECT_EQ(fired_at({1, epoch}, 2.5, 10), (Seq{3, 5, 8, 10}));
  EXPECT_EQ(fired_at({1, epoch}, 10.0 / 3.0, 10), (Seq{4, 7, 10}));
}

TEST(IntervalTrigger, NeverFiresBeforeTheFirstIteration) {
  TorchTrainerHook hook{HookOptions(1)};
  IntervalTrigger trigger(1, iteration);
  EXPECT_FALSE(trigger(hook));  // iteration 0
  IntervalTrigger by_epoch(1, epoch);
  EXPECT_FALSE(by_epoch(hook));
}

TEST(IntervalTrigger, SparseCallsFireOnceForACrossedBoundary) {
  TorchTrainerHook hook{HookOptions(4)};
  IntervalTrigger trigger(1, epoch);
  Seq fired;
  for (int i = 1; i <= 20; ++i) {
    hook.run_iteration([] {});
    if (i % 3 != 0) continue;  // consulted only every third iteration
    if (trigger(hook)) fired.push_back(hook.iteration());
  }
  // Boundaries at 4, 8, 12, 16, 20; calls at 3, 6, 9, ..., 18: 6 (crossed 4), 9 (8),
  // 12 (12), 18 (16).
  EXPECT_EQ(fired, (Seq{6, 9, 12, 18}));
}

TEST(IntervalTrigger, SaveAndLoadMidwayContinueTheSequence) {
  const Seq straight = fired_at({0.5, epoch}, 3, 12);
  Seq resumed;
  StateDict saved;
  {
    TorchTrainerHook hook{HookOptions(3)};
    hook.extend(make_extension([&](TorchTrainerHook& h) { resumed.push_back(h.iteration()); }),
                "rec", {0.5, epoch});
    run_empty(hook, 5);
    saved = hook.state_dict();
  }
  TorchTrainerHook hook{HookOptions(3)};
  hook.extend(make_extension([&](TorchTrainerHook& h) { resumed.push_back(h.iteration()); }), "rec",
              {0.5, epoch});
  hook.load_state_dict(saved);
  EXPECT_EQ(hook.iteration(), 5);
  run_empty(hook, 7);
  EXPECT_EQ(resumed, straight);
  EXPECT_TRUE(saved.contains("extension_triggers/rec/previous_iteration"));
  EXPECT_EQ(saved.get_int("extension_triggers/rec/previous_iteration"), 5);
}

TEST(Triggers, AFreshTriggerCountsFromIterationZero) {
  // Chainer: a fresh IntervalTrigger(2, iteration) first called at iteration 3 has crossed
  // the boundary at 2 since the start, so it fires.
  TorchTrainerHook hook{HookOptions(10)};
  run_empty(hook, 3);
  IntervalTrigger by_iteration(2, iteration);
  EXPECT_TRUE(by_iteration(hook));
  IntervalTrigger by_epoch(0.2, epoch);  // boundary at iteration 2 too
  EXPECT_TRUE(by_epoch(hook));
  ManualScheduleTrigger schedule({1}, iteration);  // a point passed before the first call
  EXPECT_TRUE(schedule(hook));
}

TEST(IntervalTrigger, ACallAtIterationZeroCountsAsACall) {
  TorchTrainerHook hook{HookOptions(10)};
  IntervalTrigger trigger(2, iteration);
  EXPECT_FALSE(trigger(hook));  // iteration 0: false, as in Chainer's tests
  EXPECT_EQ(trigger.state_dict().get_int("previous_iteration"), 0);
  run_empty(hook, 2);
  EXPECT_TRUE(trigger(hook));
  run_empty(hook, 1);
  EXPECT_FALSE(trigger(hook));
}

TEST(IntervalTrigger, AnOlderStateThatHadNotCalledItCountsFromZero) {
  // Older versions saved -1 for "not called yet": that is a fresh trigger, position 0.
  TorchTrainerHook hook{HookOptions(10)};
  run_empty(hook, 3);
  IntervalTrigger trigger(2, iteration);
  StateDict older = trigger.state_dict();
  older.set_int("previous_iteration", -1);
  older.set_double("previous_epoch_detail", -1);
  trigger.load_state_dict(older);
  EXPECT_TRUE(trigger(hook));  // (0, 3] holds 2
  ManualScheduleTrigger schedule({1}, iteration);
  StateDict schedule_state = schedule.state_dict();
  schedule_state.set_double("previous", -1);
  schedule.load_state_dict(schedule_state);
  EXPECT_TRUE(schedule(hook));  // (0, 3] holds 1
  TorchTrainerHook at_zero{HookOptions(10)};
  IntervalTrigger fresh(1, iteration);
  fresh.load_state_dict(older);
  EXPECT_FALSE(fresh(at_zero));  // and iteration 0 never fires
}

// ---- sparse calls: every call pattern fires as the OR of the per-iteration firings ----

struct SparseCase {
  std::string name;
  double iters_per_epoch;
  std::function<std::shared_ptr<Trigger>()> make;
};

std::vector<SparseCase> sparse_cases() {
  auto interval = [](double period, Unit unit) {
    return [=] { return std::make_shared<IntervalTrigger>(period, unit); };
  };
  auto schedule = [](std::vector<double> points, Unit unit) {
    return [=] { return std::make_shared<ManualScheduleTrigger>(points, unit); };
  };
  return {
      {"every 2 iterations", 4, interval(2, iteration)},
      {"every 3 iterations", 2.5, interval(3, iteration)},
      {"every epoch, 2.5 iterations per epoch", 2.5, interval(1, epoch)},
      {"every 0.5 epochs, 2.5 iterations per epoch", 2.5, interval(0.5, epoch)},
      {"every epoch, 0.5 iterations per epoch", 0.5, interval(1, epoch)},
      {"every 3 epochs, 0.5 iterations per epoch", 0.5, interval(3, epoch)},
      {"iterations 2, 5, 6", 4, schedule({2, 5, 6}, iteration)},
      {"epochs 0.4, 1, 2.8, 2.5 iterations per epoch", 2.5, schedule({0.4, 1, 2.8}, epoch)},
      {"epochs 1, 7, 0.5 iterations per epoch", 0.5, schedule({1, 7}, epoch)},
  };
}

constexpr int kSparseIterations = 9;  // calls at any subset of 0..9

// Whether the trigger fires at each iteration 1..n when called at every one.
std::vector<bool> dense_firings(const SparseCase& c) {
  TorchTrainerHook hook{HookOptions(c.iters_per_epoch)};
  auto trigger = c.make();
  std::vector<bool> fired(kSparseIterations + 1, false);
  for (int i = 1; i <= kSparseIterations; ++i) {
    hook.run_iteration([] {});
    fired[static_cast<size_t>(i)] = (*trigger)(hook);
  }
  return fired;
}

// Calls the trigger at the iterations in `mask` (bit i: iteration i); when `resume_at` is set,
// the calls from that iteration on go to a fresh trigger loaded with the first one's state.
// Returns whether each call fired, and the expected answer from `dense`.
void check_pattern(const SparseCase& c, const std::vector<bool>& dense, unsigned mask,
                   int resume_at) {
  TorchTrainerHook hook{HookOptions(c.iters_per_epoch)};
  auto trigger = c.make();
  int previous_call = 0;
  for (int i = 0; i <= kSparseIterations; ++i) {
    if (i > 0) hook.run_iteration([] {});
    if (i == resume_at) {
      auto resumed = c.make();
      resumed->load_state_dict(trigger->state_dict());
      trigger = resumed;
    }
    if ((mask & (1u << i)) == 0) continue;
    bool expected = false;
    for (int k = previous_call + 1; k <= i; ++k) expected = expected || dense[k];
    ASSERT_EQ((*trigger)(hook), expected)
        << c.name << ": calls " << mask << " resumed at " << resume_at << ", call at " << i;
    previous_call = i;
  }
}

TEST(Triggers, EveryCallPatternFiresOnceForEachCrossing) {
  for (const SparseCase& c : sparse_cases()) {
    const std::vector<bool> dense = dense_firings(c);
    for (unsigned mask = 0; mask < (1u << (kSparseIterations + 1)); ++mask) {
      check_pattern(c, dense, mask, /*resume_at=*/-1);
    }
  }
}

TEST(Triggers, EveryCallPatternFiresTheSameAfterAResume) {
  for (const SparseCase& c : sparse_cases()) {
    const std::vector<bool> dense = dense_firings(c);
    for (int resume_at = 1; resume_at <= kSparseIterations; ++resume_at) {
      for (unsigned mask = 0; mask < (1u << (kSparseIterations + 1)); ++mask) {
        check_pattern(c, dense, mask, resume_at);
      }
    }
  }
}

TEST(IntervalTrigger, RejectsBadArguments) {
  EXPECT_THROW_WITH(IntervalTrigger(0, iteration), Error,
                    "IntervalTrigger: period must be finite and > 0, got 0");
  EXPECT_THROW_WITH(IntervalTrigger(-1, epoch), Error,
                    "IntervalTrigger: period must be finite and > 0, got -1");
  EXPECT_THROW_WITH(IntervalTrigger(1.5, iteration), Error,
                    "IntervalTrigger: period must be an integer for iterations (use tth::epoch "
                    "for fractions), got 1.5");
  EXPECT_THROW_WITH(IntervalTrigger(1, static_cast<Unit>(7)), Error,
                    "IntervalTrigger: unit must be iteration or epoch, got 7");
  EXPECT_THROW_WITH((TriggerRef{0, epoch}), Error, "period must be finite and > 0");
}

TEST(ManualScheduleTrigger, FiresAtPointsAndFinishes) {
  auto trigger = std::make_shared<ManualScheduleTrigger>(std::vector<double>{2, 5}, iteration);
  EXPECT_EQ(fired_at(trigger, 10, 8), (Seq{2, 5}));
  EXPECT_TRUE(trigger->finished());
  EXPECT_EQ(
      fired_at(std::make_shared<ManualScheduleTrigger>(std::vector<double>{0.5, 1.5}, epoch), 4, 8),
      (Seq{2, 6}));
}

TEST(ManualScheduleTrigger, SparseCallsFireOnceForPassedPoints) {
  TorchTrainerHook hook{HookOptions(10)};
  ManualScheduleTrigger trigger({3, 4, 9}, iteration);
  hook.run_iteration([] {});
  EXPECT_FALSE(trigger(hook));  // (0, 1]
  run_empty(hook, 4);
  EXPECT_TRUE(trigger(hook));  // (1, 5] holds 3 and 4: one firing
  EXPECT_FALSE(trigger.finished());
  run_empty(hook, 3);
  EXPECT_FALSE(trigger(hook));  // (5, 8]
  run_empty(hook, 2);
  EXPECT_TRUE(trigger(hook));  // (8, 10]
  EXPECT_TRUE(trigger.finished());
}

TEST(ManualScheduleTrigger, RejectsBadArguments) {
  EXPECT_THROW_WITH(ManualScheduleTrigger({}, epoch), Error,
                    "ManualScheduleTrigger: points must not be empty");
  EXPECT_THROW_WITH(ManualScheduleTrigger({1, -2}, epoch), Error,
                    "ManualScheduleTrigger: points must be finite and > 0, got -2");
  EXPECT_THROW_WITH(ManualScheduleTrigger({1.5}, iteration), Error,
                    "ManualScheduleTrigger: points must be integers for iterations, got 1.5");
}

TEST(ManualScheduleTrigger, ResumeAfterTheScheduleSkipsInitialize) {
  std::vector<std::string> log;
  StateDict saved;
  {
    TorchTrainerHook hook{HookOptions(10)};
    hook.extend(std::make_shared<test::Recorder>("r", &log),
                ExtendOptions().trigger(
                    std::make_shared<ManualScheduleTrigger>(std::vector<double>{2}, iteration)));
    run_empty(hook, 3);
    saved = hook.state_dict();
  }
  log.clear();
  TorchTrainerHook hook{HookOptions(10)};
  hook.extend(std::make_shared<test::Recorder>("r", &log),
              ExtendOptions().trigger(
                  std::make_shared<ManualScheduleTrigger>(std::vector<double>{2}, iteration)));
  hook.load_state_dict(saved);
  run_empty(hook, 2);
  hook.finalize();
  EXPECT_EQ(log, (std::vector<std::string>{"r:finalize@5"}));
}

TEST(MaxValueTrigger, FiresOnANewMaximumOfTheIntervalMean) {
  TorchTrainerHook hook{HookOptions(2)};
  Seq fired;
  hook.extend(make_extension([&](TorchTrainerHook& h) { fired.push_back(h.iteration()); }), "rec",
              std::make_shared<MaxValueTrigger>("acc", TriggerRef{1, epoch}));
  // Means per epoch: 0.5, 0.25, 0.75, 0.75 (equal is not better), 1.0.
  const std::vector<double> values = {0.4, 0.6, 0.2, 0.3, 0.7, 0.8, 0.75, 0.75, 1.0, 1.0};
  for (double value : values) hook.run_iteration([&] { report("acc", value); });
  EXPECT_EQ(fired, (Seq{2, 6, 10}));
}

TEST(MinValueTrigger, ReadsValuesReportedByAHigherPriorityExtension) {
  TorchTrainerHook hook{HookOptions(1)};
  Seq fired;
  int step = 0;
  const std::vector<double> losses = {3, 2, 2.5, 1};
  hook.extend(make_extension([&](TorchTrainerHook&) { report("validation/loss", losses[step++]); },
                             ExtensionOptions().priority(priority::kWriter)),
              "evaluator");
  hook.extend(make_extension([&](TorchTrainerHook& h) { fired.push_back(h.iteration()); }), "rec",
              std::make_shared<MinValueTrigger>("validation/loss"));
  run_empty(hook, 4);
  EXPECT_EQ(fired, (Seq{1, 2, 4}));
}

TEST(MaxValueTrigger, AKeyNeverReportedIsAnErrorNamingIt) {
  TorchTrainerHook hook{HookOptions(1)};
  hook.extend(make_extension([](TorchTrainerHook&) {}), "rec",
              std::make_shared<MaxValueTrigger>("validation/acuracy"));
  EXPECT_THROW_WITH(hook.run_iteration([] { report("validation/accuracy", 1.0); }), Error,
                    "key 'validation/acuracy' was never reported");
}

TEST(MaxValueTrigger, StateContinuesAcrossResume) {
  auto run = [](TorchTrainerHook& hook, Seq& fired, int from, int to) {
    const std::vector<double> values = {1, 3, 2, 5, 4, 6, 6, 7};
    for (int i = from; i < to; ++i) hook.run_iteration([&] { report("acc", values[i]); });
    (void)fired;
  };
  int runs = 0;  // one output directory per run
  auto make = [&runs](Seq& fired) {
    auto hook =
        std::make_unique<TorchTrainerHook>(HookOptions(2).out("result_" + std::to_string(runs++)));
    hook->extend(make_extension([&](TorchTrainerHook& h) { fired.push_back(h.iteration()); }),
                 "rec", std::make_shared<MaxValueTrigger>("acc"));
    return hook;
  };
  Seq straight, resumed;
  auto a = make(straight);
  run(*a, straight, 0, 8);
  auto b = make(resumed);
  run(*b, resumed, 0, 3);  // mid-epoch: the running mean must survive
  StateDict saved = b->state_dict();
  auto c = make(resumed);
  c->load_state_dict(saved);
  run(*c, resumed, 3, 8);
  EXPECT_EQ(resumed, straight);
  EXPECT_EQ(straight, (Seq{2, 4, 6, 8}));
}

TEST(OnceTrigger, FiresOnceAndOptionallyAgainOnResume) {
  EXPECT_EQ(fired_at(std::make_shared<OnceTrigger>(), 10, 5), (Seq{1}));
  for (bool call_on_resume : {false, true}) {
    OnceTrigger first(call_on_resume);
    TorchTrainerHook hook{HookOptions(1)};
    EXPECT_TRUE(first(hook));
    EXPECT_FALSE(first(hook));
    EXPECT_TRUE(first.finished());
    OnceTrigger resumed(call_on_resume);
    resumed.load_state_dict(first.state_dict());
    EXPECT_EQ(resumed.finished(), !call_on_resume);
    EXPECT_EQ(resumed(hook), call_on_resume);
    EXPECT_FALSE(resumed(hook));
  }
}

TEST(TimeTrigger, FiresAfterEachPeriodOfElapsedTime) {
  TorchTrainerHook hook{HookOptions(1)};
  auto trigger = std::make_shared<TimeTrigger>(0.05);
  Seq fired;
  hook.extend(make_extension([&](TorchTrainerHook& h) { fired.push_back(h.iteration()); }), "rec",
              trigger);
  hook.run_iteration([] {});
  EXPECT_TRUE(fired.empty());
  hook.run_iteration([] { std::this_thread::sleep_for(std::chrono::milliseconds(120)); });
  EXPECT_EQ(fired, (Seq{2}));
  // The deadline moved by one period (0.05 -> 0.1), so the pause of over two periods is
  // caught up on the next iteration (0.1 -> 0.15), then it waits again.
  EXPECT_DOUBLE_EQ(trigger->state_dict().get_double("next_time"), 0.1);
  hook.run_iteration([] {});
  EXPECT_EQ(fired, (Seq{2, 3}));
  EXPECT_DOUBLE_EQ(trigger->state_dict().get_double("next_time"), 0.15);
  EXPECT_THROW_WITH(TimeTrigger(0), Error, "TimeTrigger: seconds must be finite and > 0, got 0");
}

TEST(TimeTrigger, ElapsedTimeContinuesAcrossResume) {
  StateDict saved;
  {
    TorchTrainerHook hook{HookOptions(1)};
    hook.run_iteration([] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); });
    saved = hook.state_dict();
  }
  EXPECT_GE(saved.get_double("manager/elapsed_time"), 0.03);
  TorchTrainerHook hook{HookOptions(1)};
  hook.load_state_dict(saved);
  EXPECT_GE(hook.elapsed_time(), 0.03);
  hook.run_iteration([] {});
  EXPECT_GE(hook.elapsed_time(), 0.03);
}

TEST(EarlyStoppingTrigger, StopsAfterPatienceChecksWithoutImprovement) {
  auto trigger = std::make_shared<EarlyStoppingTrigger>(
      EarlyStoppingOptions().monitor("val/loss").patience(2).check({1, iteration}));
  TorchTrainerHook hook{HookOptions(1).stop_trigger(trigger)};
  const std::vector<double> losses = {5, 4, 4.5, 3, 3.5, 3.2, 9, 9};
  size_t i = 0;
  while (!hook.done()) hook.run_iteration([&] { report("val/loss", losses.at(i++)); });
  // Improvements at 1, 2, 4; no improvement at 5 and 6 -> stop after iteration 6.
  EXPECT_EQ(hook.iteration(), 6);
  EXPECT_EQ(trigger->best(), 3);
}

TEST(EarlyStoppingTrigger, MaxTriggerBoundsTrainingAndAutoModeMaximizesAccuracy) {
  auto trigger = std::make_shared<EarlyStoppingTrigger>(
      EarlyStoppingOptions().monitor("main/accuracy").max_trigger({3, epoch}));
  TorchTrainerHook hook{HookOptions(2).stop_trigger(trigger)};
  double accuracy = 0;
  while (!hook.done()) hook.run_iteration([&] { report("main/accuracy", accuracy += 0.1); });
  EXPECT_EQ(hook.iteration(), 6);
  // Checks at 2 (mean 0.15) and 4 (0.35); at 6 the max trigger fires first and ends training.
  EXPECT_NEAR(trigger->best(), 0.35, 1e-12);
  ASSERT_TRUE(hook.training_length());
  EXPECT_EQ(hook.training_length()->period, 3);
  EXPECT_EQ(hook.training_length()->unit, epoch);
}

TEST(EarlyStoppingTrigger, BestAndPatienceSurviveAResume) {
  const std::vector<double> losses = {5, 4, 4.5, 4.6, 4.7, 4.8};
  auto make = [] {
    return std::make_shared<EarlyStoppingTrigger>(
        EarlyStoppingOptions().patience(3).check({1, iteration}));
  };
  StateDict saved;
  {
    TorchTrainerHook hook{HookOptions(1).stop_trigger(make())};
    for (int i = 0; i < 3; ++i) {
      ASSERT_FALSE(hook.done());
      hook.run_iteration([&] { report("main/loss", losses[i]); });
    }
    saved = hook.state_dict();
  }
  auto trigger = make();
  TorchTrainerHook hook{HookOptions(1).stop_trigger(trigger)};
  hook.load_state_dict(saved);
  EXPECT_EQ(trigger->best(), 4);
  EXPECT_EQ(trigger->checks_without_improvement(), 1);
  size_t i = 3;
  while (!hook.done()) hook.run_iteration([&] { report("main/loss", losses.at(i++)); });
  EXPECT_EQ(hook.iteration(), 5);  // as without the resume: stale at 3, 4, 5
}

TEST(EarlyStoppingTrigger, RejectsBadArguments) {
  EXPECT_THROW_WITH(EarlyStoppingTrigger(EarlyStoppingOptions().patience(0)), Error,
                    "patience must be >= 1, got 0");
  EXPECT_THROW_WITH(EarlyStoppingTrigger(EarlyStoppingOptions().monitor("")), Error,
                    "monitor must not be empty");
}

TEST(FunctionTrigger, ConsultsThePredicateOnlyWhenTheCheckFires) {
  int calls = 0;
  auto trigger = std::make_shared<FunctionTrigger>(
      [&](const TorchTrainerHook& hook) {
        ++calls;
        return hook.iteration() % 4 == 0;
      },
      TriggerRef{2, iteration});
  EXPECT_EQ(fired_at(trigger, 10, 9), (Seq{4, 8}));
  EXPECT_EQ(calls, 4);
  EXPECT_THROW_WITH(FunctionTrigger(nullptr), Error, "predicate must be callable");
}

}  // namespace
}  // namespace tth
