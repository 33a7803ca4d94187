// Moving StateDict values in and out of LibTorch archives, shared by the LibTorch savefun and
// archive_state. Private. Files are never read through here (torch_archive.h reads them):
// read_values serves archive_state, which round-trips bytes it has just written itself.
#pragma once

#include <string>

#include "tth/state_dict.h"
#include "tth/torch_fwd.h"

namespace tth {

/// Writes `value` under `key`: a tensor as a tensor (`as_buffer` chooses buffer or
/// parameter), a text as a string.
void write_value(torch::serialize::OutputArchive& archive, const std::string& key,
                 const StateValue& value, bool as_buffer);

/// Every entry of `archive`: tensors and strings, plus (when `scalars`) ints, doubles and
/// bools as 0-d tensors. Anything else is a tth::FormatError naming `context` and the key.
StateDict read_values(torch::serialize::InputArchive& archive, const std::string& context,
                      bool scalars);

/// The serialized bytes of `archive`.
std::string archive_bytes(torch::serialize::OutputArchive& archive);

}  // namespace tth
