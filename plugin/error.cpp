#include "tth/error.h"

#include <cstring>

namespace tth {

IOError::IOError(const std::string& what, const std::string& path, int error_number)
    : Error(what + " '" + path + "': " + std::strerror(error_number)),
      path_(path),
      error_number_(error_number) {}

}  // namespace tth
