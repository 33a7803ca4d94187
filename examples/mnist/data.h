// The example's data: an MNIST-format dataset (idx.h) as LibTorch tensors.
//
// Images become float32 [N, 1, rows, columns] tensors scaled to [0, 1] (byte / 255), and, with
// LoadOptions::normalize, then standardized by the training split's own mean and standard
// deviation (the same two numbers for both splits, so the test data sees the training
// statistics). Labels become int64 [N] tensors of class indices. Everything is in memory:
// Fashion-MNIST takes 220 MB as float32.
//
// Thread safety: the functions are reentrant.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <string>

#include "idx.h"

namespace mnist {

/// One split of a dataset as tensors.
struct Examples {
  at::Tensor images;  // float32 [N, 1, rows, columns]
  at::Tensor labels;  // int64 [N], each in 0 .. kClasses - 1
  int64_t size() const { return labels.size(0); }
};

/// Options of load_mnist.
struct LoadOptions {
  /// Only the first N examples of each split (for tests and quick tries). Default: all.
  TORCH_ARG(std::optional<int64_t>, limit);
  /// Standardizes the pixels by the training split's mean and standard deviation. Default
  /// false (pixels in [0, 1]).
  TORCH_ARG(bool, normalize) = false;
  /// Limit on the bytes of one file (idx.h). Default kDefaultMaxBytes.
  TORCH_ARG(uint64_t, max_bytes) = kDefaultMaxBytes;
};

/// A whole dataset: where it came from and its two splits.
struct Dataset {
  MnistFiles files;
  Examples train;
  Examples test;
};

/// The images and labels as tensors (copies), the first `limit` only when given.
/// REQUIRES: as many labels as images (check_same_count).
Examples to_examples(const IdxImages& images, const IdxLabels& labels,
                     std::optional<int64_t> limit = std::nullopt);

/// Finds (find_mnist_files), reads and checks the four files of `directory`: each file as
/// idx.h describes, then equal image and label counts per split, the same image size in both
/// splits, and at least one example in each. Throws tth::Error naming the file and problem.
Dataset load_mnist(const std::string& directory, const LoadOptions& options = {});

}  // namespace mnist
