#include "tth/archive_state.h"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "archive_values.h"
#include "check_argument.h"

namespace tth {

ArchiveState::ArchiveState(Save save, Load load) : save_(std::move(save)), load_(std::move(load)) {
  check_argument(save_ && load_, "ArchiveState", "save and load", "must be callable");
}

StateDict ArchiveState::state_dict() const {
  torch::serialize::OutputArchive out;
  save_(out);
  const std::string bytes = archive_bytes(out);
  torch::serialize::InputArchive in;
  in.load_from(bytes.data(), bytes.size());
  // Plain ints would come back as 0-d tensors, which the object could not read: refused.
  return read_values(in, "archive_state", /*scalars=*/false);
}

void ArchiveState::load_state_dict(const StateDict& state) {
  // Only the keys the object itself saves: a non-strict load also hands over a file's other
  // keys, and every name written here lands in TorchScript source that InputArchive compiles.
  // (The bytes are ours; the names must be too.)
  const StateDict own = state_dict();
  torch::serialize::OutputArchive out;
  for (const auto& [key, value] : state) {
    if (own.contains(key)) write_value(out, key, value, /*as_buffer=*/true);
  }
  const std::string bytes = archive_bytes(out);
  torch::serialize::InputArchive in;
  in.load_from(bytes.data(), bytes.size());
  load_(in);
}

}  // namespace tth
