#include "tth/extensions/average_across_ranks.h"

#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <set>
#include <utility>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/process_group.h"
#include "tth/reporter.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

constexpr char kWho[] = "AverageAcrossRanks";

// c10::Error's what() carries a C++ backtrace; the message alone says what went wrong.
std::string message_of(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    return c10_error->what_without_backtrace();
  }
  return error.what();
}

}  // namespace

AverageAcrossRanks::AverageAcrossRanks(std::vector<std::string> keys) : keys_(std::move(keys)) {
  check_argument(!keys_.empty(), kWho, "keys",
                 "must name at least one reported key (e.g. \"main/loss\")");
  std::set<std::string> seen;
  for (const std::string& key : keys_) {
    check_argument(!key.empty(), kWho, "keys", "must not contain an empty key");
    check_argument(seen.insert(key).second, kWho, "keys", "must not repeat a key",
                   fmt::format("'{}' twice", key));
  }
}

void AverageAcrossRanks::operator()(TorchTrainerHook& hook) {
  const std::shared_ptr<ProcessGroup>& group = hook.process_group();
  if (!group || group->world_size() <= 1) return;
  Observation& observation = hook.observation();
  const auto n = static_cast<int64_t>(keys_.size());
  // [sum_0, count_0, sum_1, count_1, ...]. A rank whose value cannot be read still takes part
  // (so no rank waits for it) and marks the key with a count of -world_size: the summed count
  // is negative exactly when some rank had a bad value (the others add at most world_size - 1).
  at::Tensor totals = at::zeros({2 * n}, at::kDouble);
  auto* data = totals.data_ptr<double>();
  const auto poison = -static_cast<double>(group->world_size());
  std::vector<std::string> problems(keys_.size());
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    auto found = observation.find(keys_[i]);
    if (found == observation.end()) continue;
    try {
      data[2 * i] = found->second.value();
      data[2 * i + 1] = 1;
    } catch (const std::exception& error) {
      problems[i] = message_of(error);
      data[2 * i + 1] = poison;
    }
  }
  // On the group's device (a CUDA tensor for NCCL), read back on the CPU.
  std::vector<at::Tensor> tensors{totals.to(group->device())};
  group->all_reduce_sum(tensors);
  const at::Tensor sums = tensors[0].cpu().contiguous();
  const auto* summed = sums.data_ptr<double>();
  // Every rank sees the same sums, so every rank throws the same way, before anything changes.
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (summed[2 * i + 1] >= 0) continue;
    throw Error(problems[i].empty()
                    ? fmt::format("{}: key '{}' is not a numeric scalar on another rank at "
                                  "iteration {}; report one number per key",
                                  kWho, keys_[i], hook.iteration())
                    : fmt::format("{}: key '{}' is not a numeric scalar on rank {} at iteration "
                                  "{}: {}; report one number per key",
                                  kWho, keys_[i], group->rank(), hook.iteration(), problems[i]));
  }
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    const double count = summed[2 * i + 1];
    if (count == 0) continue;  // reported on no rank: stays absent
    observation.insert_or_assign(keys_[i], ObservedValue(summed[2 * i] / count));
  }
}

std::shared_ptr<AverageAcrossRanks> average_across_ranks(std::vector<std::string> keys) {
  return std::make_shared<AverageAcrossRanks>(std::move(keys));
}

}  // namespace tth
