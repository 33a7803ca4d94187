#include "archive_values.h"

#include <fmt/format.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "tth/error.h"

namespace tth {

void write_value(torch::serialize::OutputArchive& archive, const std::string& key,
                 const StateValue& value, bool as_buffer) {
  if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
    archive.write(key, *tensor, as_buffer);
  } else {
    archive.write(key, c10::IValue(std::get<std::string>(value)));
  }
}

StateDict read_values(torch::serialize::InputArchive& archive, const std::string& context,
                      bool scalars) {
  StateDict state;
  for (const std::string& key : archive.keys()) {
    c10::IValue value;
    archive.try_read(key, value);
    if (value.isTensor()) {
      state.set(key, value.toTensor());
    } else if (value.isString()) {
      state.set(key, value.toStringRef());
    } else if (scalars && value.isInt()) {
      state.set_int(key, value.toInt());
    } else if (scalars && value.isDouble()) {
      state.set_double(key, value.toDouble());
    } else if (scalars && value.isBool()) {
      state.set_bool(key, value.toBool());
    } else {
      throw FormatError(fmt::format("{}: key '{}' holds a {}, which cannot be loaded here", context,
                                    key, value.tagKind()));
    }
  }
  return state;
}

std::string archive_bytes(torch::serialize::OutputArchive& archive) {
  std::string bytes;
  archive.save_to([&](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  return bytes;
}

}  // namespace tth
