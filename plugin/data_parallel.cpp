#include "tth/data_parallel.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <fmt/format.h>

#include <cmath>
#include <sstream>
#include <string>

#include "check_argument.h"
#include "tth/error.h"

namespace tth {

namespace {

constexpr char kWho[] = "DataParallel";
constexpr double kBytesPerMiB = 1024.0 * 1024.0;

size_t bytes_of(const at::Tensor& tensor) {
  return static_cast<size_t>(tensor.numel()) * tensor.element_size();
}

// Groups tensors (in their order) into buckets of one dtype and device and at most cap_bytes
// each, but for a tensor larger than the cap, alone in its bucket. Returns the tensors'
// indices per bucket, buckets in the order they were opened; the same on every rank for the
// same tensors.
std::vector<std::vector<size_t>> assign_buckets(const std::vector<at::Tensor>& tensors,
                                                double cap_bytes) {
  struct Open {
    at::ScalarType dtype;
    c10::Device device;
    size_t bucket;
    size_t bytes;
  };
  std::vector<std::vector<size_t>> buckets;
  std::vector<Open> open;  // the bucket still filling, per dtype and device
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& tensor = tensors[i];
    const size_t bytes = bytes_of(tensor);
    Open* current = nullptr;
    for (Open& candidate : open) {
      if (candidate.dtype == tensor.scalar_type() && candidate.device == tensor.device()) {
        current = &candidate;
      }
    }
    if (current == nullptr) {
      open.push_back({tensor.scalar_type(), tensor.device(), 0, 0});
      current = &open.back();
      current->bucket = buckets.size();
      buckets.emplace_back();
    } else if (current->bytes > 0 && static_cast<double>(current->bytes + bytes) > cap_bytes) {
      current->bucket = buckets.size();
      current->bytes = 0;
      buckets.emplace_back();
    }
    buckets[current->bucket].push_back(i);
    current->bytes += bytes;
  }
  return buckets;
}

// One line per parameter and buffer, and the bucket cap: what must agree between the ranks (the
// cap decides which tensors share a collective, so different caps would pair other buckets).
std::string layout_of(const torch::nn::Module& module, const DataParallelOptions& options) {
  std::ostringstream out;
  out << fmt::format("bucket_cap_mb {}\n", options.bucket_cap_mb());
  for (const auto& entry : module.named_parameters()) {
    const at::Tensor& value = entry.value();
    out << "parameter " << entry.key() << ": " << value.dtype() << " " << value.sizes()
        << (value.requires_grad() ? " requires grad" : "") << "\n";
  }
  for (const auto& entry : module.named_buffers()) {
    const at::Tensor& value = entry.value();
    out << "buffer " << entry.key() << ": ";
    if (value.defined()) {
      out << value.dtype() << " " << value.sizes() << "\n";
    } else {
      out << "undefined\n";
    }
  }
  return out.str();
}

// The first line where this rank's layout differs from rank 0's; empty when they are equal.
std::string first_difference(const std::string& mine, const std::string& rank0) {
  std::istringstream a(mine), b(rank0);
  std::string line_a, line_b;
  for (;;) {
    const bool more_a = static_cast<bool>(std::getline(a, line_a));
    const bool more_b = static_cast<bool>(std::getline(b, line_b));
    if (!more_a && !more_b) return {};
    if (!more_a) return fmt::format("nothing where rank 0 has '{}'", line_b);
    if (!more_b) return fmt::format("'{}' where rank 0 has nothing more", line_a);
    if (line_a != line_b) return fmt::format("'{}' where rank 0 has '{}'", line_a, line_b);
  }
}

}  // namespace

// Parameters of one dtype and device, averaged with one all-reduce of `flat` (allocated once,
// reused by every step).
struct DataParallel::Bucket {
  std::vector<at::Tensor> parameters;
  std::vector<std::string> names;
  at::Tensor flat;
};

DataParallel::DataParallel(std::shared_ptr<torch::nn::Module> module,
                           std::shared_ptr<ProcessGroup> group, DataParallelOptions options)
    : module_(std::move(module)), group_(std::move(group)), options_(std::move(options)) {
  check_argument(module_ != nullptr, kWho, "module", "must not be null");
  check_argument(group_ != nullptr, kWho, "group", "must not be null");
  check_argument(std::isfinite(options_.bucket_cap_mb()) && options_.bucket_cap_mb() > 0, kWho,
                 "bucket_cap_mb", "must be finite and > 0", options_.bucket_cap_mb());

  // A module of another structure elsewhere would make the collectives below mismatch.
  const std::string layout = layout_of(*module_, options_);
  const std::string rank0_layout = group_->broadcast_string(layout, 0);
  if (!group_->all_true(layout == rank0_layout)) {
    const std::string difference = first_difference(layout, rank0_layout);
    throw DistributedError(fmt::format(
        "{}: the ranks' modules or options differ (every rank must build the same module, with "
        "the same parameters and buffers, and pass the same DataParallelOptions): {}",
        kWho,
        difference.empty()
            ? fmt::format("rank {} has rank 0's, another rank's error names its difference",
                          group_->rank())
            : fmt::format("rank {} of {} has {}", group_->rank(), group_->world_size(),
                          difference)));
  }

  std::vector<at::Tensor> parameters;
  std::vector<std::string> names;
  for (const auto& entry : module_->named_parameters()) {
    if (!entry.value().requires_grad()) continue;
    parameters.push_back(entry.value());
    names.push_back(entry.key());
  }
  for (const auto& indices : assign_buckets(parameters, options_.bucket_cap_mb() * kBytesPerMiB)) {
    Bucket bucket;
    int64_t elements = 0;
    for (const size_t i : indices) {
      bucket.parameters.push_back(parameters[i]);
      bucket.names.push_back(names[i]);
      elements += parameters[i].numel();
    }
    if (elements == 0) continue;  // nothing to average (the same on every rank)
    bucket.flat = at::empty({elements}, parameters[indices.front()].options().requires_grad(false));
    parameter_count_ += bucket.parameters.size();
    buckets_.push_back(std::move(bucket));
  }

  broadcast_parameters(0);
}

DataParallel::~DataParallel() = default;

void DataParallel::synchronize_gradients() {
  // Checked on every bucket before the first collective, so a rank that throws here has not
  // left the others waiting in the middle of a step.
  for (const Bucket& bucket : buckets_) {
    for (size_t i = 0; i < bucket.parameters.size(); ++i) {
      const at::Tensor& grad = bucket.parameters[i].grad();
      if (grad.defined() && grad.is_sparse()) {
        throw Error(fmt::format("{}: parameter '{}' has a sparse gradient, which is not supported",
                                kWho, bucket.names[i]));
      }
    }
  }
  if (buckets_.empty()) return;  // the same on every rank (the structure check)
  at::NoGradGuard no_grad;
  // How many ranks have each parameter's gradient: a parameter no rank used keeps an undefined
  // gradient (so an optimizer's momentum or weight decay leaves it alone, as with DDP), one used
  // somewhere gets the mean. One collective on every rank, whatever graph its batch made.
  std::vector<at::Tensor> used{at::empty({static_cast<int64_t>(parameter_count_)},
                                         at::TensorOptions(at::kInt).device(at::kCPU))};
  {
    auto* flags = used[0].data_ptr<int32_t>();
    size_t k = 0;
    for (const Bucket& bucket : buckets_) {
      for (const at::Tensor& parameter : bucket.parameters) {
        flags[k++] = parameter.grad().defined() ? 1 : 0;
      }
    }
  }
  used[0] = used[0].to(group_->device());
  group_->all_reduce_sum(used);
  const at::Tensor counts = used[0].cpu().contiguous();
  const auto* users = counts.data_ptr<int32_t>();

  const double world_size = group_->world_size();
  size_t first = 0;  // index of the bucket's first parameter in `users`
  for (Bucket& bucket : buckets_) {
    const size_t n_parameters = bucket.parameters.size();
    bool any_used = false;
    for (size_t i = 0; i < n_parameters; ++i) any_used = any_used || users[first + i] > 0;
    if (!any_used) {  // the same on every rank: no collective for it anywhere
      first += n_parameters;
      continue;
    }
    int64_t offset = 0;
    for (const at::Tensor& parameter : bucket.parameters) {
      const int64_t n = parameter.numel();
      at::Tensor slice = bucket.flat.narrow(0, offset, n);
      const at::Tensor& grad = parameter.grad();
      if (grad.defined()) {
        slice.view(parameter.sizes()).copy_(grad);
      } else {
        slice.zero_();  // not used by this rank's graph: contributes nothing to the sum
      }
      offset += n;
    }
    // Divided before the sum, as DDP does: a sum of N half-precision gradients can overflow
    // where their mean does not.
    bucket.flat.div_(world_size);
    std::vector<at::Tensor> flat{bucket.flat};
    group_->all_reduce_sum(flat);
    offset = 0;
    for (size_t i = 0; i < n_parameters; ++i) {
      at::Tensor& parameter = bucket.parameters[i];
      const int64_t n = parameter.numel();
      const at::Tensor mean = bucket.flat.narrow(0, offset, n).view(parameter.sizes());
      offset += n;
      if (users[first + i] == 0) continue;  // no rank used it: stays undefined everywhere
      if (parameter.grad().defined()) {
        parameter.mutable_grad().copy_(mean);
      } else {
        at::Tensor grad = at::empty_like(parameter);
        grad.copy_(mean);
        parameter.mutable_grad() = grad;
      }
    }
    first += n_parameters;
  }
}

void DataParallel::broadcast_parameters(int root) {
  check_argument(root >= 0 && root < group_->world_size(), "DataParallel::broadcast_parameters",
                 "root", fmt::format("must be a rank in [0, {})", group_->world_size()), root);
  std::vector<at::Tensor> tensors;
  for (const at::Tensor& parameter : module_->parameters()) tensors.push_back(parameter);
  for (const at::Tensor& buffer : module_->buffers()) {
    if (buffer.defined()) tensors.push_back(buffer);
  }
  at::NoGradGuard no_grad;
  for (const auto& indices : assign_buckets(tensors, options_.bucket_cap_mb() * kBytesPerMiB)) {
    std::vector<at::Tensor> pieces;
    for (const size_t i : indices) pieces.push_back(tensors[i].reshape({-1}));
    std::vector<at::Tensor> flat{at::cat(pieces)};
    if (flat.front().numel() == 0) continue;
    group_->broadcast(flat, root);
    if (group_->rank() == root) continue;
    int64_t offset = 0;
    for (const size_t i : indices) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(flat.front().narrow(0, offset, n).view(tensors[i].sizes()));
      offset += n;
    }
  }
}

const std::shared_ptr<ProcessGroup>& DataParallel::process_group() const noexcept { return group_; }

size_t DataParallel::bucket_count() const noexcept { return buckets_.size(); }

}  // namespace tth
