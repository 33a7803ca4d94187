// The example's two models for 1 x 28 x 28 images and 10 classes: a small CNN (the default)
// and an MLP. Each returns logits [N, 10]; the loss is cross entropy.
//
// The layers are named members (not a Sequential), so their parameters are saved as
// "conv1.weight", "fc2.bias", ... in snapshots and in model_final, which reads well in numpy.
// benchmarks/mnist_python.py builds the same CNN in Python PyTorch.
#pragma once

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace mnist {

/// Image side length the models take (MNIST's).
inline constexpr int64_t kImageSide = 28;

/// conv 1->32 3x3, relu, maxpool 2; conv 32->64 3x3, relu, maxpool 2; fc 1600->128, relu,
/// dropout 0.25; fc 128->10. 225k parameters; about 90% on Fashion-MNIST's test set after the
/// example's default 3 epochs (89.8% measured).
class CnnImpl : public torch::nn::Module {
 public:
  CnnImpl()
      : conv1_(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3)))),
        conv2_(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3)))),
        fc1_(register_module("fc1", torch::nn::Linear(kFlat, 128))),
        dropout_(register_module("dropout", torch::nn::Dropout(0.25))),
        fc2_(register_module("fc2", torch::nn::Linear(128, 10))) {}

  at::Tensor forward(at::Tensor x) {
    namespace F = torch::nn::functional;
    // 28 -> conv 26 -> pool 13 -> conv 11 -> pool 5.
    x = F::max_pool2d(torch::relu(conv1_->forward(x)), F::MaxPool2dFuncOptions(2));
    x = F::max_pool2d(torch::relu(conv2_->forward(x)), F::MaxPool2dFuncOptions(2));
    x = torch::relu(fc1_->forward(x.flatten(1)));
    // Dropout draws from the global CPU generator, whose state snapshots save: a resumed run
    // drops the same units as an uninterrupted one.
    return fc2_->forward(dropout_->forward(x));
  }

 private:
  static constexpr int64_t kFlat = 64 * 5 * 5;
  torch::nn::Conv2d conv1_;
  torch::nn::Conv2d conv2_;
  torch::nn::Linear fc1_;
  torch::nn::Dropout dropout_;
  torch::nn::Linear fc2_;
};
TORCH_MODULE(Cnn);

/// fc 784->256, relu; fc 256->128, relu; fc 128->10. About 88% on Fashion-MNIST after 3 epochs
/// (87.7% measured), several times quicker to train than the CNN.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl()
      : fc1_(register_module("fc1", torch::nn::Linear(kImageSide * kImageSide, 256))),
        fc2_(register_module("fc2", torch::nn::Linear(256, 128))),
        fc3_(register_module("fc3", torch::nn::Linear(128, 10))) {}

  at::Tensor forward(at::Tensor x) {
    x = torch::relu(fc1_->forward(x.flatten(1)));
    x = torch::relu(fc2_->forward(x));
    return fc3_->forward(x);
  }

 private:
  torch::nn::Linear fc1_;
  torch::nn::Linear fc2_;
  torch::nn::Linear fc3_;
};
TORCH_MODULE(Mlp);

}  // namespace mnist
