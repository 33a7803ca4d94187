// Small string helpers shared by the file readers. Private.
#pragma once

#include <string>

namespace tth {

inline bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace tth
