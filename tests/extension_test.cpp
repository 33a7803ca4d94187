#include "support.h"

namespace tth {
namespace {

using Log = std::vector<std::string>;
using test::Recorder;
using test::run_empty;

std::shared_ptr<Recorder> recorder(const std::string& name, Log* log) {
  return std::make_shared<Recorder>(name, log);
}

TEST(Extension, CallOrderFollowsPriorityWithStableTies) {
  Log log;
  TorchTrainerHook hook{HookOptions(10).stop_trigger({2, iteration})};
  hook.extend(recorder("reader1", &log));  // default priority kReader
  hook.extend(recorder("writer", &log), ExtendOptions().priority(priority::kWriter));
  hook.extend(recorder("reader2", &log));
  hook.extend(recorder("editor", &log), ExtendOptions().priority(priority::kEditor));
  EXPECT_EQ(hook.extension_names(),
            (std::vector<std::string>{"writer", "editor", "reader1", "reader2"}));
  while (!hook.done()) hook.run_iteration([&] { log.push_back("update"); });
  EXPECT_EQ(log, (Log{"writer:initialize@0", "editor:initialize@0", "reader1:initialize@0",
                      "reader2:initialize@0", "update", "writer:call@1", "editor:call@1",
                      "reader1:call@1", "reader2:call@1", "update", "writer:call@2",
                      "editor:call@2", "reader1:call@2", "reader2:call@2", "writer:finalize@2",
                      "editor:finalize@2", "reader1:finalize@2", "reader2:finalize@2"}));
}

TEST(Extension, CallBeforeTrainingRunsOnceAtIterationZeroInAFreshObservation) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  double seen = -1;
  hook.extend(make_extension(
                  [&](TorchTrainerHook& h) {
                    seen = static_cast<double>(h.observation().size());
                    report("before", 1.0);
                    log.push_back("before@" + std::to_string(h.iteration()));
                  },
                  ExtensionOptions().trigger({2, iteration})),
              ExtendOptions().name("b").call_before_training(true));
  hook.extend(recorder("plain", &log), ExtendOptions().trigger({1, epoch}));
  run_empty(hook, 2);
  EXPECT_EQ(seen, 0);
  EXPECT_EQ(log, (Log{"plain:initialize@0", "before@0", "before@2"}));
  EXPECT_EQ(hook.observation().count("before"), 1u);  // reported by the call at iteration 2
}

TEST(Extension, CallBeforeTrainingIsSkippedOnResume) {
  Log log;
  TorchTrainerHook first{HookOptions(10).out("first")};
  run_empty(first, 3);
  TorchTrainerHook hook{HookOptions(10).out("second")};
  hook.extend(
      make_extension([&](TorchTrainerHook& h) { log.push_back(std::to_string(h.iteration())); },
                     ExtensionOptions().trigger(TriggerRef::never())),
      ExtendOptions().name("b").call_before_training(true));
  hook.load_state_dict(first.state_dict());
  run_empty(hook, 1);
  EXPECT_TRUE(log.empty());
}

TEST(Extension, SnapshotPriorityRunsAfterEveryTriggerWasEvaluated) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  auto logging_trigger = [&](const std::string& name) {
    return std::make_shared<FunctionTrigger>([&log, name](const TorchTrainerHook&) {
      log.push_back("trigger:" + name);
      return true;
    });
  };
  hook.extend(recorder("snapshot", &log),
              ExtendOptions().trigger(logging_trigger("snapshot")).priority(priority::kSnapshot));
  hook.extend(recorder("reader", &log), ExtendOptions().trigger(logging_trigger("reader")));
  hook.extend(recorder("last", &log),
              ExtendOptions().trigger(logging_trigger("last")).priority(-200));
  hook.run_iteration([] {});
  EXPECT_EQ(log, (Log{"reader:initialize@0", "snapshot:initialize@0", "last:initialize@0",
                      "trigger:reader", "reader:call@1", "trigger:snapshot", "trigger:last",
                      "snapshot:call@1", "last:call@1"}));
}

TEST(Extension, ErrorInUpdateRunsEveryOnErrorThenFinalizeAndRethrowsTheOriginal) {
  Log log;
  auto failing = recorder("failing_handler", &log);
  failing->throw_in_on_error = true;
  auto other = recorder("other", &log);
  {
    TorchTrainerHook hook{HookOptions(10)};
    hook.extend(failing, ExtendOptions().priority(priority::kWriter));
    hook.extend(other);
    hook.run_iteration([] {});
    struct Boom : std::runtime_error {
      using std::runtime_error::runtime_error;
    };
    EXPECT_THROW(hook.run_iteration([] { throw Boom("boom"); }), Boom);
    EXPECT_TRUE(other->error_seen);
    EXPECT_TRUE(hook.done());
    EXPECT_THROW_WITH(hook.run_iteration([] {}), Error, "training has already ended");
  }  // destruction must not finalize twice
  EXPECT_EQ(log, (Log{"failing_handler:initialize@0", "other:initialize@0",
                      "failing_handler:call@1", "other:call@1", "failing_handler:on_error@1",
                      "other:on_error@1", "failing_handler:finalize@1", "other:finalize@1"}));
}

TEST(Extension, ErrorInAnExtensionTakesTheSameErrorPath) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  hook.extend(recorder("first", &log), ExtendOptions().priority(priority::kWriter));
  hook.extend(make_extension([](TorchTrainerHook&) { throw std::logic_error("extension bug"); }),
              "bad");
  EXPECT_THROW_WITH(hook.run_iteration([] {}), std::logic_error, "extension bug");
  EXPECT_EQ(log,
            (Log{"first:initialize@0", "first:call@1", "first:on_error@1", "first:finalize@1"}));
}

TEST(Extension, ErrorInInitializeTakesTheErrorPath) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  hook.extend(recorder("r", &log));
  hook.extend(make_extension([](TorchTrainerHook&) {},
                             ExtensionOptions().initializer(
                                 [](TorchTrainerHook&) { throw std::runtime_error("init"); })),
              "bad_init");
  EXPECT_THROW_WITH(hook.run_iteration([] {}), std::runtime_error, "init");
  EXPECT_EQ(log, (Log{"r:initialize@0", "r:on_error@0", "r:finalize@0"}));
}

TEST(Extension, ExplicitPairRunsTheErrorPathThroughHandleError) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  hook.extend(recorder("r", &log));
  try {
    hook.begin_iteration();
    throw std::runtime_error("step failed");
  } catch (...) {
    hook.handle_error(std::current_exception());
    hook.handle_error(std::current_exception());  // idempotent
  }
  EXPECT_EQ(log, (Log{"r:initialize@0", "r:on_error@0", "r:finalize@0"}));
  EXPECT_THROW_WITH(hook.end_iteration(), Error, "no iteration was begun");
}

TEST(Extension, FinalizeRunsExactlyOnceOnDestructionAndOnStop) {
  Log log;
  {
    TorchTrainerHook hook{HookOptions(10)};
    hook.extend(recorder("r", &log));
    run_empty(hook, 1);
  }
  EXPECT_EQ(log, (Log{"r:initialize@0", "r:call@1", "r:finalize@1"}));
  log.clear();
  {
    TorchTrainerHook hook{HookOptions(10)};
    hook.extend(recorder("r", &log), ExtendOptions().trigger(TriggerRef::never()));
    run_empty(hook, 1);
    hook.stop();
    EXPECT_TRUE(hook.done());
    EXPECT_TRUE(hook.done());
    hook.finalize();
  }
  EXPECT_EQ(log, (Log{"r:initialize@0", "r:finalize@1"}));
  log.clear();
  {
    TorchTrainerHook hook{HookOptions(10)};  // never started: nothing to finalize
    hook.extend(recorder("r", &log));
  }
  EXPECT_TRUE(log.empty());
}

TEST(Extension, FinalizeErrorsAreRethrownAfterEveryFinalizeRan) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  hook.extend(
      make_extension([](TorchTrainerHook&) {}, ExtensionOptions().finalizer([](TorchTrainerHook&) {
        throw std::runtime_error("close");
      })),
      ExtendOptions().name("bad").priority(priority::kWriter));
  hook.extend(recorder("r", &log));
  run_empty(hook, 1);
  EXPECT_THROW_WITH(hook.finalize(), std::runtime_error, "close");
  EXPECT_EQ(log.back(), "r:finalize@1");
}

TEST(Extension, DuplicateNamesGetSuffixes) {
  TorchTrainerHook hook{HookOptions(10)};
  Log log;
  EXPECT_EQ(hook.extend(recorder("r", &log)), "r");
  EXPECT_EQ(hook.extend(recorder("r", &log)), "r_1");
  EXPECT_EQ(hook.extend(recorder("x", &log), "r"), "r_2");
  EXPECT_EQ(hook.extension_names(), (std::vector<std::string>{"r", "r_1", "r_2"}));
  EXPECT_THROW_WITH(hook.extension("nope"), Error, "'nope'");
}

TEST(Extension, DefaultNameIsTheClassName) {
  struct MyCustomExtension : Extension {};
  TorchTrainerHook hook{HookOptions(1)};
  auto name = hook.extend(std::make_shared<MyCustomExtension>());
  EXPECT_THAT(name, ::testing::EndsWith("MyCustomExtension"));
  EXPECT_EQ(name.find("::"), std::string::npos);
  EXPECT_EQ(hook.extend(make_extension([](TorchTrainerHook&) {})), "lambda");
}

TEST(Extension, ExtendOptionsOverrideEachDefaultAndThePositionalFormStays) {
  Log log;
  TorchTrainerHook hook{HookOptions(10)};
  // Only the priority set: name and trigger (every iteration) are the extension's.
  EXPECT_EQ(hook.extend(recorder("late", &log), ExtendOptions().priority(-5)), "late");
  // Only the trigger set.
  EXPECT_EQ(hook.extend(recorder("sparse", &log), ExtendOptions().trigger({2, iteration})),
            "sparse");
  // Every option.
  EXPECT_EQ(hook.extend(recorder("one", &log), ExtendOptions()
                                                   .name("first")
                                                   .trigger(TriggerRef::never())
                                                   .priority(priority::kWriter)
                                                   .call_before_training(true)),
            "first");
  // The positional form, as Chainer users write it.
  EXPECT_EQ(hook.extend(recorder("two", &log), "second", {1, iteration}, priority::kEditor),
            "second");
  EXPECT_EQ(hook.extension_names(),
            (std::vector<std::string>{"first", "second", "sparse", "late"}));
  run_empty(hook, 2);
  // The recorders log their own names: "one" is registered as "first", "two" as "second".
  EXPECT_EQ(log, (Log{"one:initialize@0", "two:initialize@0", "sparse:initialize@0",
                      "late:initialize@0", "one:call@0", "two:call@1", "late:call@1", "two:call@2",
                      "sparse:call@2", "late:call@2"}));
  // The options read back as they were set.
  const auto options = ExtendOptions().name("n").priority(3).call_before_training(true);
  EXPECT_EQ(options.name(), std::optional<std::string>("n"));
  EXPECT_EQ(options.priority(), std::optional<int>(3));
  EXPECT_TRUE(options.call_before_training());
  EXPECT_FALSE(options.trigger().is_set());
}

TEST(Extension, FailingHandlersAreReportedThroughTheWarningChannel) {
  Log log;
  auto failing = recorder("failing_handler", &log);
  failing->throw_in_on_error = true;
  test::CapturedWarnings warnings;
  TorchTrainerHook hook{HookOptions(10)};
  hook.extend(failing);
  EXPECT_THROW(hook.run_iteration([] { throw std::runtime_error("boom"); }), std::runtime_error);
  EXPECT_EQ(warnings.messages(),
            (std::vector<std::string>{"TorchTrainerHook: on_error of extension 'failing_handler' "
                                      "failed: handler failure"}));
}

TEST(Extension, BadArgumentsAreRejected) {
  TorchTrainerHook hook{HookOptions(10)};
  EXPECT_THROW_WITH(hook.extend(nullptr), Error, "extend: extension must not be null");
  EXPECT_THROW_WITH(hook.extend(make_extension([](TorchTrainerHook&) {}), ""), Error,
                    "name must not be empty");
  EXPECT_THROW_WITH(hook.extend(make_extension([](TorchTrainerHook&) {}), "a/b"), Error,
                    "extend: name must not contain '/', got 'a/b'");
  EXPECT_THROW_WITH(make_extension(nullptr), Error, "make_extension: fn must be callable");
  run_empty(hook, 1);
  EXPECT_THROW_WITH(hook.extend(make_extension([](TorchTrainerHook&) {}), "late"), Error,
                    "extend: training has started (iteration 1); register 'late' before the "
                    "first iteration");
}

}  // namespace
}  // namespace tth
