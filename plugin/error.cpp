#include "tth/error.h"

#include <cstring>

namespace tth {

namespace {
std::string state_message(const std::string& what, const std::string& key,
                          const std::string& problem, const std::string& file) {
  return what + ": " + (file.empty() ? std::string() : file + ": ") + "key '" + key +
         "': " + problem;
}
}  // namespace

IOError::IOError(const std::string& what, const std::string& path, int error_number)
    : Error(what + " '" + path + "': " + std::strerror(error_number)),
      path_(path),
      error_number_(error_number) {}

StateError::StateError(std::string what, std::string key, std::string problem, std::string file)
    : Error(state_message(what, key, problem, file)),
      what_(std::move(what)),
      key_(std::move(key)),
      problem_(std::move(problem)),
      file_(std::move(file)) {}

StateError StateError::in_file(std::string what, std::string file) const {
  return StateError(std::move(what), key_, problem_, std::move(file));
}

}  // namespace tth
