#include "data.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "tth/error.h"

namespace mnist {

namespace {

// The byte range of pixel values: bytes / kMaxPixel lie in [0, 1].
constexpr double kMaxPixel = 255.0;

Examples read_split(const std::string& images_path, const std::string& labels_path,
                    const LoadOptions& options) {
  const IdxImages images = read_idx_images(images_path, options.max_bytes());
  const IdxLabels labels = read_idx_labels(labels_path, options.max_bytes());
  check_same_count(images, images_path, labels, labels_path);
  if (images.count == 0) throw tth::FormatError(images_path + ": holds no images");
  return to_examples(images, labels, options.limit());
}

}  // namespace

Examples to_examples(const IdxImages& images, const IdxLabels& labels,
                     std::optional<int64_t> limit) {
  int64_t count = images.count;
  if (limit) count = std::min(count, *limit);
  const int64_t rows = images.rows, columns = images.columns;
  // from_blob borrows the bytes; the conversion copies them into tensors of their own.
  auto* pixels = const_cast<uint8_t*>(images.pixels.data());
  Examples examples;
  examples.images =
      at::from_blob(pixels, {count, 1, rows, columns}, at::kByte).to(at::kFloat).div_(kMaxPixel);
  auto* classes = const_cast<uint8_t*>(labels.labels.data());
  examples.labels = at::from_blob(classes, {count}, at::kByte).to(at::kLong);
  return examples;
}

Dataset load_mnist(const std::string& directory, const LoadOptions& options) {
  if (options.limit() && *options.limit() <= 0) {
    throw tth::Error("load_mnist: limit must be > 0, got " + std::to_string(*options.limit()));
  }
  Dataset data;
  data.files = find_mnist_files(directory);
  data.train = read_split(data.files.train_images, data.files.train_labels, options);
  data.test = read_split(data.files.test_images, data.files.test_labels, options);
  if (data.train.images.sizes().slice(1) != data.test.images.sizes().slice(1)) {
    throw tth::FormatError(
        data.files.test_images + ": images of " + std::to_string(data.test.images.size(2)) + "x" +
        std::to_string(data.test.images.size(3)) + ", but " + data.files.train_images +
        " holds images of " + std::to_string(data.train.images.size(2)) + "x" +
        std::to_string(data.train.images.size(3)));
  }
  if (options.normalize()) {
    const double mean = data.train.images.mean().item<double>();
    const double std = data.train.images.std().item<double>();
    if (std > 0) {
      data.train.images.sub_(mean).div_(std);
      data.test.images.sub_(mean).div_(std);
    }
  }
  return data;
}

}  // namespace mnist
