#include "support.h"

namespace tth {
namespace {

TEST(StateDict, KeepsInsertionOrderAndReplacesInPlace) {
  StateDict state;
  state.set_int("b", 1);
  state.set_double("a", 2.5);
  state.set("c", std::string("text"));
  state.set_int("b", 7);
  std::vector<std::string> keys;
  for (const auto& entry : state) keys.push_back(entry.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(state.get_int("b"), 7);
  EXPECT_EQ(state.get_double("a"), 2.5);
  EXPECT_EQ(state.text("c"), "text");
}

TEST(StateDict, ScalarsAreZeroDimTensorsOfTheirType) {
  StateDict state;
  state.set_int("i", 3);
  state.set_double("d", 0.5);
  state.set_bool("b", true);
  EXPECT_EQ(state.tensor("i").dim(), 0);
  EXPECT_EQ(state.tensor("i").scalar_type(), at::kLong);
  EXPECT_EQ(state.tensor("d").scalar_type(), at::kDouble);
  EXPECT_EQ(state.tensor("b").scalar_type(), at::kBool);
  EXPECT_TRUE(state.get_bool("b"));
}

TEST(StateDict, SubAndMergeRoundTripPrefixes) {
  StateDict inner;
  inner.set_int("x", 1);
  inner.set_int("y/z", 2);
  StateDict outer;
  outer.merge("p/q", inner);
  outer.set_int("p/qq", 3);  // shares a string prefix, not a path prefix
  EXPECT_TRUE(outer.contains("p/q/y/z"));
  StateDict back = outer.sub("p/q");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back.get_int("y/z"), 2);
}

TEST(StateDict, ErrorsNameTheKey) {
  StateDict state;
  state.set("t", std::string("x"));
  state.set("v", at::zeros({3}));
  EXPECT_THROW_WITH(state.at("missing"), StateError, "StateDict: key 'missing': is absent");
  EXPECT_THROW_WITH(state.tensor("t"), StateError, "StateDict: key 't': holds a text");
  EXPECT_THROW_WITH(state.text("v"), StateError, "StateDict: key 'v': holds a tensor");
  EXPECT_THROW_WITH(state.get_int("v"), StateError,
                    "StateDict: key 'v': must hold a scalar, got Float[3]");
}

TEST(StateDict, EraseKeepsTheIndexConsistent) {
  StateDict state;
  state.set_int("a", 1);
  state.set_int("b", 2);
  state.set_int("c", 3);
  EXPECT_TRUE(state.erase("a"));
  EXPECT_FALSE(state.erase("a"));
  EXPECT_EQ(state.get_int("c"), 3);
  state.set_int("c", 4);
  EXPECT_EQ(state.size(), 2u);
  EXPECT_EQ(state.get_int("c"), 4);
}

TEST(CheckCompatible, ReportsMissingExtraAndMismatchedValues) {
  StateDict expected;
  expected.set("w", at::zeros({2, 3}));
  expected.set_int("n", 0);
  StateDict given = expected;
  EXPECT_NO_THROW(check_compatible(expected, given, true, "test"));

  StateDict missing;
  missing.set("w", at::zeros({2, 3}));
  EXPECT_THROW_WITH(check_compatible(expected, missing, true, "test"), StateError,
                    "test: key 'n': is missing");
  const IncompatibleKeys lacking = check_compatible(expected, missing, false, "test");
  EXPECT_EQ(lacking.missing_keys, std::vector<std::string>{"n"});
  EXPECT_TRUE(lacking.unexpected_keys.empty());

  StateDict extra = expected;
  extra.set_int("surplus", 1);
  EXPECT_THROW_WITH(check_compatible(expected, extra, true, "test"), StateError,
                    "test: key 'surplus': is not expected");
  const IncompatibleKeys surplus = check_compatible(expected, extra, false, "test");
  EXPECT_TRUE(surplus.missing_keys.empty());
  EXPECT_EQ(surplus.unexpected_keys, std::vector<std::string>{"surplus"});

  StateDict shape = expected;
  shape.set("w", at::zeros({3, 2}));
  EXPECT_THROW_WITH(check_compatible(expected, shape, false, "test"), StateError,
                    "test: key 'w': holds Float[3, 2] but Float[2, 3] is expected");
  StateDict dtype = expected;
  dtype.set("n", std::string("zero"));
  EXPECT_THROW_WITH(check_compatible(expected, dtype, false, "test"), StateError,
                    "test: key 'n': holds text but Long[] is expected");
}

TEST(Reporter, ReportsIntoTheActiveObservationOnly) {
  report("ignored", 1.0);  // no scope: a no-op, not an error
  Observation outer;
  {
    ObservationScope scope(outer);
    report("a", 1.0);
    Observation inner;
    {
      ObservationScope nested(inner);
      report({{"b", 2.0}, {"c", at::tensor(3.5)}});
    }
    report("a", 4.0);  // last value wins
    EXPECT_EQ(inner.size(), 2u);
    EXPECT_EQ(inner.at("c").value(), 3.5);
  }
  report("ignored", 1.0);
  ASSERT_EQ(outer.size(), 1u);
  EXPECT_EQ(outer.at("a").value(), 4.0);
}

TEST(Reporter, DetachesTensorsAndRejectsNonScalars) {
  at::Tensor x = at::ones({}, at::TensorOptions().requires_grad(true));
  ObservedValue value(x * 2);
  EXPECT_EQ(value.value(), 2.0);
  EXPECT_THROW_WITH(ObservedValue(at::ones({2})), Error, "one element, got 2");
}

TEST(StateError, HasOneShapeAndNamesTheFileWhenThereIsOne) {
  const StateError plain("load_npz", "l1.weight", "holds Float[2] but Float[3] is expected");
  EXPECT_STREQ(plain.what(), "load_npz: key 'l1.weight': holds Float[2] but Float[3] is expected");
  EXPECT_EQ(plain.key(), "l1.weight");
  EXPECT_TRUE(plain.file().empty());
  const StateError located = plain.in_file("snapshot autoload", "out/snapshot_iter_5");
  EXPECT_STREQ(located.what(),
               "snapshot autoload: out/snapshot_iter_5: key 'l1.weight': holds Float[2] but "
               "Float[3] is expected");
  EXPECT_EQ(located.file(), "out/snapshot_iter_5");
  EXPECT_EQ(located.problem(), plain.problem());
}

TEST(RunningMean, SavesAndLoadsItself) {
  RunningMean mean;
  Observation observation{{"loss", 2.0}};
  mean.add(observation, "loss");
  observation.insert_or_assign("loss", 4.0);
  mean.add(observation, "loss");
  RunningMean resumed;
  resumed.load_state_dict(mean.state_dict());
  EXPECT_EQ(resumed.count, 2);
  EXPECT_DOUBLE_EQ(resumed.take("loss", "test"), 3.0);
  EXPECT_THROW_WITH(resumed.take("loss", "test"), Error, "test: key 'loss' was never reported");
}

TEST(Diagnostics, OneReplaceableChannelForWarnings) {
  std::vector<std::string> first, second;
  WarningHandler original = set_warning_handler([&](const std::string& m) { first.push_back(m); });
  warn("one");
  WarningHandler previous = set_warning_handler([&](const std::string& m) { second.push_back(m); });
  warn("two");
  previous("three");  // the handler given back is the one that was installed
  EXPECT_EQ(first, (std::vector<std::string>{"one", "three"}));
  EXPECT_EQ(second, (std::vector<std::string>{"two"}));
  // A throwing handler cannot turn a warning into a failure.
  set_warning_handler([](const std::string&) { throw std::runtime_error("handler"); });
  EXPECT_NO_THROW(warn("four"));
  // An empty handler restores the default: "tth: <message>" on stderr.
  set_warning_handler(nullptr);
  ::testing::internal::CaptureStderr();
  warn("five");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "tth: five\n");
  set_warning_handler(original);
}

}  // namespace
}  // namespace tth
