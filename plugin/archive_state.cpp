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
  torch::serialize::OutputArchive out;
  for (const auto& [key, value] : state) write_value(out, key, value, /*as_buffer=*/true);
  const std::string bytes = archive_bytes(out);
  torch::serialize::InputArchive in;
  in.load_from(bytes.data(), bytes.size());
  load_(in);
}

}  // namespace tth
