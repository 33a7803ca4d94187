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
  EXPECT_THROW_WITH(state.at("missing"), StateError, "'missing'");
  EXPECT_THROW_WITH(state.tensor("t"), StateError, "'t' holds a text");
  EXPECT_THROW_WITH(state.text("v"), StateError, "'v' holds a tensor");
  EXPECT_THROW_WITH(state.get_int("v"), StateError, "'v' must hold a scalar, got Float[3]");
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
                    "key 'n' is missing");
  EXPECT_NO_THROW(check_compatible(expected, missing, false, "test"));

  StateDict extra = expected;
  extra.set_int("surplus", 1);
  EXPECT_THROW_WITH(check_compatible(expected, extra, true, "test"), StateError,
                    "unexpected key 'surplus'");
  EXPECT_NO_THROW(check_compatible(expected, extra, false, "test"));

  StateDict shape = expected;
  shape.set("w", at::zeros({3, 2}));
  EXPECT_THROW_WITH(check_compatible(expected, shape, false, "test"), StateError,
                    "key 'w' holds Float[3, 2] but Float[2, 3] is expected");
  StateDict dtype = expected;
  dtype.set("n", std::string("zero"));
  EXPECT_THROW_WITH(check_compatible(expected, dtype, false, "test"), StateError,
                    "key 'n' holds text but Long[] is expected");
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

}  // namespace
}  // namespace tth
