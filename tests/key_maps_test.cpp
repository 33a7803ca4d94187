// Key maps (tth/key_maps.h): continuing a Chainer training in LibTorch. A numpy script writes a
// Chainer trainer snapshot with known optimizer state and computes, as the oracle, the step
// Chainer's update rule would take next; LibTorch's step after the load must take the same.
#include "tth/key_maps.h"

#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "libtorch_compat.h"
#include "support.h"
#include "test_util.h"
#include "tth/npz.h"

namespace tth::test {
namespace {

// Laid out like the Chainer model `predictor` of the snapshots below: links l1 and l2, whose
// W (out, in) has the shape of LibTorch's weight.
struct Mlp : torch::nn::Module {
  Mlp()
      : l1(register_module("l1", torch::nn::Linear(3, 4))),
        l2(register_module("l2", torch::nn::Linear(4, 2))) {}
  torch::nn::Linear l1, l2;
};

const std::vector<std::string> kLinks = {"l1/W", "l1/b", "l2/W", "l2/b"};
constexpr const char* kModel = "updater/model:main/predictor/";
constexpr const char* kOptimizer = "updater/optimizer:main/predictor/";

// Adam's hyper-parameters, not the defaults: Chainer does not save them, so the loaded optimizer
// must step with those it was constructed with.
constexpr double kAlpha = 0.01, kBeta1 = 0.8, kBeta2 = 0.99, kEps = 1e-8;
// MomentumSGD's.
constexpr double kLr = 0.1, kMomentum = 0.9;

// Writes, as chainer.serializers.save_npz(trainer) lays it out, a snapshot sys.argv[1] of the
// model and its optimizer's per-parameter state (each rule with a step count t of its own, as
// Chainer keeps them: a rule whose parameter had no gradient does not count), and into
// sys.argv[2] the gradient of the next step (grad/<link>) and the weights after Chainer's update
// rule applies it (W/<link>, float64). sys.argv[3] is "adam" or "momentum_sgd".
constexpr const char* kChainerTraining = R"(
import sys, math, numpy as np
snapshot, oracle, kind = sys.argv[1:4]
alpha, beta1, beta2, eps = 0.01, 0.8, 0.99, 1e-8
lr, momentum = 0.1, 0.9
rng = np.random.RandomState(0)
links = {'l1/W': (4, 3), 'l1/b': (4,), 'l2/W': (2, 4), 'l2/b': (2,)}
steps = {'l1/W': 3, 'l1/b': 4, 'l2/W': 5, 'l2/b': 6}
file, expected = {}, {}
for link, shape in links.items():
    W = rng.uniform(-1, 1, shape).astype('f4')
    g = rng.uniform(-0.5, 0.5, shape).astype('f4')
    t = steps[link]
    o = 'updater/optimizer:main/predictor/' + link + '/'
    file['updater/model:main/predictor/' + link] = W
    file[o + 't'] = np.array(t)
    expected['grad/' + link] = g
    W, g = W.astype('f8'), g.astype('f8')
    if kind == 'adam':
        m = rng.uniform(-0.1, 0.1, shape).astype('f4')
        v = rng.uniform(0.01, 0.04, shape).astype('f4')
        file[o + 'm'], file[o + 'v'] = m, v
        # chainer.optimizers.Adam: t, m, v and then W.
        t += 1
        m = m + (1 - beta1) * (g - m)
        v = v + (1 - beta2) * (g * g - v)
        lr_t = alpha * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        W = W - lr_t * m / (np.sqrt(v) + eps)
    else:
        v = rng.uniform(-0.1, 0.1, shape).astype('f4')
        file[o + 'v'] = v
        # chainer.optimizers.MomentumSGD.
        v = momentum * v - lr * g
        W = W + v
    expected['W/' + link] = W
file['updater/optimizer:main/t'] = np.array(6)
file['updater/optimizer:main/epoch'] = np.array(2)
file['updater/iteration'] = np.array(6)
np.savez_compressed(snapshot, **file)
np.savez(oracle, **expected)
)";

struct Training {
  std::string snapshot;
  StateDict oracle;
};

Training chainer_training(const TempDir& dir, const std::string& kind) {
  Training training{dir / (kind + ".npz"), {}};
  python(kChainerTraining, {training.snapshot, dir / "oracle.npz", kind});
  training.oracle = read_npz(dir / "oracle.npz");
  return training;
}

at::Tensor& parameter(Mlp& net, const std::string& link) {
  torch::nn::Linear& layer = link.rfind("l1/", 0) == 0 ? net.l1 : net.l2;
  return link.back() == 'W' ? layer->weight : layer->bias;
}

template <typename State>
State& state_of(torch::optim::Optimizer& optimizer, const at::Tensor& param) {
  return static_cast<State&>(*optimizer.state().at(compat::optimizer_state_key(param)));
}

// Sets each parameter's gradient to the oracle's and takes one step.
void step_with_oracle_gradient(Mlp& net, torch::optim::Optimizer& optimizer,
                               const StateDict& oracle) {
  for (const auto& link : kLinks)
    parameter(net, link).mutable_grad() = oracle.tensor("grad/" + link);
  optimizer.step();
}

double max_difference(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(ChainerOptimizerState, AdamContinuesAChainerTraining) {
  TempDir dir;
  const Training training = chainer_training(dir, "adam");
  const StateDict file = read_npz(training.snapshot);
  Mlp net;
  load_npz(training.snapshot, net, NpzLoadOptions().prefix(kModel).key_map(chainer_names));
  torch::optim::Adam adam(net.parameters(),
                          torch::optim::AdamOptions(kAlpha).betas({kBeta1, kBeta2}).eps(kEps));
  // Strict: every key below the prefix has a place.
  const IncompatibleKeys left_out =
      load_npz(training.snapshot, adam, chainer_optimizer_state(net, adam).prefix(kOptimizer));
  EXPECT_TRUE(left_out.empty());

  ASSERT_EQ(adam.state().size(), kLinks.size());
  for (const auto& link : kLinks) {
    SCOPED_TRACE(link);
    const std::string chainer = kOptimizer + link + "/";
    auto& state = state_of<torch::optim::AdamParamState>(adam, parameter(net, link));
    EXPECT_TRUE(same_tensor(state.exp_avg(), file.tensor(chainer + "m")));
    EXPECT_TRUE(same_tensor(state.exp_avg_sq(), file.tensor(chainer + "v")));
    EXPECT_EQ(state.step(), file.tensor(chainer + "t").item<int64_t>());
    EXPECT_FALSE(state.max_exp_avg_sq().defined());
  }
  ASSERT_EQ(adam.param_groups().size(), 1u);
  const auto& options =
      static_cast<const torch::optim::AdamOptions&>(adam.param_groups()[0].options());
  EXPECT_EQ(options.lr(), kAlpha);
  EXPECT_EQ(std::get<0>(options.betas()), kBeta1);
  EXPECT_EQ(std::get<1>(options.betas()), kBeta2);
  EXPECT_EQ(options.eps(), kEps);

  step_with_oracle_gradient(net, adam, training.oracle);
  // Chainer adds eps to sqrt(v) before the bias correction of the second moment, PyTorch after
  // it (sqrt(v) / sqrt(1 - beta2^t) + eps): the steps differ by about eps / sqrt(v) of their
  // size. With sqrt(v) >= 0.1, that is 1e-7 of a step of about 1e-3, far below float32's
  // rounding of weights near 1 (6e-8), so the tolerance is a few ulps of the weights; a step
  // count off by one, or m and v exchanged, misses it by orders of magnitude.
  for (const auto& link : kLinks) {
    SCOPED_TRACE(link);
    EXPECT_LT(max_difference(parameter(net, link), training.oracle.tensor("W/" + link)), 3e-7);
    EXPECT_EQ(state_of<torch::optim::AdamParamState>(adam, parameter(net, link)).step(),
              file.tensor(kOptimizer + link + "/t").item<int64_t>() + 1);
  }
}

// Chainer's MomentumSGD keeps the velocity v and steps v = momentum * v - lr * g; W += v.
// PyTorch's SGD keeps buf and steps buf = momentum * buf + g; W -= lr * buf. So v == -lr * buf:
// the buffer that continues a Chainer training is -v / lr, with the lr of the next step (the
// LibTorch optimizer's), which chainer_optimizer_state's value map computes.
TEST(ChainerOptimizerState, MomentumSgdContinuesAChainerTraining) {
  TempDir dir;
  const Training training = chainer_training(dir, "momentum_sgd");
  const StateDict file = read_npz(training.snapshot);
  const auto sgd_options = torch::optim::SGDOptions(kLr).momentum(kMomentum);
  // Loads the snapshot into a fresh model and SGD (with the velocity converted, or taken as it
  // is), takes the oracle's step, and returns the largest difference from Chainer's weights.
  const auto continue_with = [&](bool convert) {
    Mlp net;
    torch::optim::SGD sgd(net.parameters(), sgd_options);
    load_npz(training.snapshot, net, NpzLoadOptions().prefix(kModel).key_map(chainer_names));
    NpzLoadOptions options = chainer_optimizer_state(net, sgd).prefix(kOptimizer);
    if (!convert) options.value_map(nullptr);
    // Strict: t, which SGD does not keep, is skipped rather than unexpected.
    EXPECT_TRUE(load_npz(training.snapshot, sgd, options).empty());
    EXPECT_EQ(sgd.state().size(), kLinks.size());
    EXPECT_EQ(static_cast<const torch::optim::SGDOptions&>(sgd.param_groups()[0].options()).lr(),
              kLr);
    for (const auto& link : kLinks) {
      const at::Tensor& v = file.tensor(kOptimizer + link + "/v");
      const at::Tensor& buffer =
          state_of<torch::optim::SGDParamState>(sgd, parameter(net, link)).momentum_buffer();
      EXPECT_TRUE(same_tensor(buffer, convert ? v / -kLr : v)) << link;
    }
    step_with_oracle_gradient(net, sgd, training.oracle);
    double difference = 0;
    for (const auto& link : kLinks) {
      difference = std::max(
          difference, max_difference(parameter(net, link), training.oracle.tensor("W/" + link)));
    }
    return difference;
  };
  EXPECT_LT(continue_with(true), 3e-7);  // float32 rounding of weights near 1
  // Without the conversion the momentum would point backwards: the step misses by about |v|.
  EXPECT_GT(continue_with(false), 1e-3);
}

// Chainer's plain SGD keeps only each rule's t, which LibTorch's SGD has no place for: the load
// succeeds and leaves no state, with the optimizer's options as constructed.
TEST(ChainerOptimizerState, PlainSgdHasNothingButStepCountsToLoad) {
  TempDir dir;
  StateDict file;
  for (const auto& link : kLinks) file.set_int(kOptimizer + link + "/t", 7);
  file.set_int("updater/optimizer:main/t", 7);
  npz_savefun()(dir / "sgd.npz", file);
  Mlp net;
  torch::optim::SGD sgd(net.parameters(), torch::optim::SGDOptions(0.25));
  EXPECT_TRUE(
      load_npz(dir / "sgd.npz", sgd, chainer_optimizer_state(net, sgd).prefix(kOptimizer)).empty());
  EXPECT_TRUE(sgd.state().empty());
  EXPECT_EQ(static_cast<const torch::optim::SGDOptions&>(sgd.param_groups()[0].options()).lr(),
            0.25);
}

TEST(ChainerOptimizerState, KeysWithoutAPlaceAreNamedByAStrictLoad) {
  TempDir dir;
  const Training training = chainer_training(dir, "adam");
  StateDict file = read_npz(training.snapshot);
  file.set(std::string(kOptimizer) + "l3/W/m", at::zeros({2, 2}));  // a link the module lacks
  npz_savefun()(dir / "extra.npz", file);
  Mlp net;
  torch::optim::Adam adam(net.parameters(), torch::optim::AdamOptions(kAlpha));
  const NpzLoadOptions options = chainer_optimizer_state(net, adam).prefix(kOptimizer);
  EXPECT_THROW_WITH(load_npz(dir / "extra.npz", adam, options), StateError,
                    "load_npz: " + (dir / "extra.npz") + ": key 'l3/W/m': is not expected");
  EXPECT_TRUE(adam.state().empty());  // nothing changed
  const IncompatibleKeys left_out =
      load_npz(dir / "extra.npz", adam, NpzLoadOptions(options).strict(false));
  EXPECT_EQ(left_out.unexpected_keys, std::vector<std::string>{"l3/W/m"});
  EXPECT_EQ(adam.state().size(), kLinks.size());
  // A mistyped prefix selects nothing: an error rather than a state reset to "never stepped".
  EXPECT_THROW_WITH(
      load_npz(training.snapshot, adam,
               chainer_optimizer_state(net, adam).prefix("updater/optimizer:mian/predictor/")),
      StateError,
      "key 'updater/optimizer:mian/predictor/': no key of the file starts with this prefix");
  EXPECT_EQ(adam.state().size(), kLinks.size());
}

TEST(ChainerOptimizerState, PlacesEachFieldByGroupAndPosition) {
  KeyMap adam_map, sgd_map, amsgrad_map;
  ValueMap sgd_values, adam_values;
  {
    Mlp net;
    // Two groups, in another order than the module's: places follow the optimizer.
    std::vector<torch::optim::OptimizerParamGroup> groups = {
        torch::optim::OptimizerParamGroup({net.l2->bias, net.l2->weight}),
        torch::optim::OptimizerParamGroup({net.l1->weight})};  // l1.bias not optimized
    torch::optim::Adam adam(groups, torch::optim::AdamOptions());
    torch::optim::AdamW adamw(groups, torch::optim::AdamWOptions().amsgrad(true));
    torch::optim::SGD sgd(groups, torch::optim::SGDOptions(0.1).momentum(0.9));
    adam_map = chainer_optimizer_state(net, adam).key_map();
    adam_values = chainer_optimizer_state(net, adam).value_map();
    amsgrad_map = chainer_optimizer_state(net, adamw).key_map();
    sgd_map = chainer_optimizer_state(net, sgd).key_map();
    sgd_values = chainer_optimizer_state(net, sgd).value_map();
  }  // the maps hold copies: the module and the optimizers are gone
  EXPECT_EQ(adam_map("l2/b/m"), "state/0/0/exp_avg");
  EXPECT_EQ(adam_map("l2/W/v"), "state/0/1/exp_avg_sq");
  EXPECT_EQ(adam_map("l1/W/t"), "state/1/0/step");
  EXPECT_EQ(amsgrad_map("l1/W/vhat"), "state/1/0/max_exp_avg_sq");
  EXPECT_EQ(sgd_map("l2/W/v"), "state/0/1/momentum_buffer");
  EXPECT_EQ(sgd_map("l1/W/t"), "");
  // Not a place of the optimizer: unchanged, for a strict load to name.
  for (const std::string key :
       {"l1/b/m", "l3/W/m", "l1/W/u", "l1/W", "t", "epoch", "l1/W/m/x", ""}) {
    EXPECT_EQ(adam_map(key), key);
  }
  EXPECT_EQ(sgd_map("l1/W/m"), "l1/W/m");
  // Adam's state loads as it is; SGD's velocity becomes a buffer, -v / lr of its group.
  EXPECT_FALSE(adam_values);
  ASSERT_TRUE(sgd_values);
  const at::Tensor v = torch::tensor({0.5f, -0.25f});
  EXPECT_TRUE(same_tensor(sgd_values("state/0/1/momentum_buffer", v), v / -0.1));
  EXPECT_TRUE(same_tensor(sgd_values("state/1/0/momentum_buffer", v), v / -0.1));
  EXPECT_TRUE(same_tensor(sgd_values("state/2/0/momentum_buffer", v), v));  // no such group
  EXPECT_TRUE(same_tensor(sgd_values("models/x", v), v));
}

TEST(ChainerOptimizerState, RefusesOtherOptimizersAndRepeatedParameters) {
  Mlp net;
  torch::optim::RMSprop rmsprop(net.parameters(), torch::optim::RMSpropOptions());
  EXPECT_THROW_WITH(chainer_optimizer_state(net, rmsprop), Error,
                    "chainer_optimizer_state: optimizer must be SGD, Adam or AdamW, got "
                    "torch::optim::RMSprop");
  torch::optim::Adagrad adagrad(net.parameters(), torch::optim::AdagradOptions());
  EXPECT_THROW_WITH(chainer_optimizer_state(net, adagrad), Error, "optimizer must be SGD");
  torch::optim::Adam twice(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup({net.l1->weight, net.l1->bias}),
          torch::optim::OptimizerParamGroup({net.l2->weight, net.l1->weight})},
      torch::optim::AdamOptions());
  EXPECT_THROW_WITH(chainer_optimizer_state(net, twice), Error,
                    "chainer_optimizer_state: optimizer must hold each parameter once, got one "
                    "at param_groups[0][0] and again at [1][1]");
  torch::optim::SGD still(net.parameters(), torch::optim::SGDOptions(0).momentum(0.9));
  EXPECT_THROW_WITH(chainer_optimizer_state(net, still), Error,
                    "chainer_optimizer_state: optimizer must have a non-zero lr in every group");
}

}  // namespace
}  // namespace tth::test
