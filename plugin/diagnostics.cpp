#include "tth/diagnostics.h"

#include <iostream>
#include <mutex>

namespace tth {

namespace {

void print_to_stderr(const std::string& message) { std::cerr << "tth: " << message << '\n'; }

struct Channel {
  std::mutex mutex;
  WarningHandler handler = print_to_stderr;
};

Channel& channel() {
  static Channel instance;
  return instance;
}

}  // namespace

WarningHandler set_warning_handler(WarningHandler handler) {
  Channel& c = channel();
  std::lock_guard<std::mutex> lock(c.mutex);
  WarningHandler previous = std::move(c.handler);
  c.handler = handler ? std::move(handler) : WarningHandler(print_to_stderr);
  return previous;
}

void warn(const std::string& message) noexcept {
  Channel& c = channel();
  try {
    WarningHandler handler;
    {
      // Called outside the lock, so that a handler may warn or replace itself.
      std::lock_guard<std::mutex> lock(c.mutex);
      handler = c.handler;
    }
    handler(message);
  } catch (...) {
    // A warning must never turn into a failure of the code that warned.
  }
}

}  // namespace tth
