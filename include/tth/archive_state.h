// archive_state: the state of any LibTorch-serializable object (a sampler, say) as Stateful.
//
// LibTorch objects such as `torch::data::samplers::RandomSampler` save themselves into a
// `torch::serialize::OutputArchive` (`save(archive)` / `load(archive)`), not into a
// StateDict. `archive_state(object)` bridges the two: the archive's entries become StateDict
// entries (tensors and strings; anything else is an error), so they can be registered with
// `TorchTrainerHook::add_state` and travel in snapshots, e.g. to continue the data order of
// a shuffled sampler exactly after a resume:
//
//   auto sampler = std::make_shared<torch::data::samplers::RandomSampler>(dataset_size);
//   hook.add_state("sampler", tth::archive_state(sampler));
//
// Thread safety: as the wrapped object's.
#pragma once

#include <functional>
#include <memory>

#include "tth/stateful.h"
#include "tth/torch_fwd.h"

namespace tth {

/// A Stateful that saves and loads through archive functions.
class ArchiveState : public Stateful {
 public:
  using Save = std::function<void(torch::serialize::OutputArchive&)>;
  using Load = std::function<void(torch::serialize::InputArchive&)>;
  /// REQUIRES: both callable.
  ArchiveState(Save save, Load load);
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  Save save_;
  Load load_;
};

/// Wraps an object with `save(OutputArchive&) const` and `load(InputArchive&)`.
template <typename T>
std::shared_ptr<Stateful> archive_state(std::shared_ptr<T> object) {
  return std::make_shared<ArchiveState>(
      [object](torch::serialize::OutputArchive& archive) { object->save(archive); },
      [object](torch::serialize::InputArchive& archive) { object->load(archive); });
}

}  // namespace tth
