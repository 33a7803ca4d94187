// Diagnostics: the one channel for the library's warnings.
//
// Whatever the library notices without failing goes through one replaceable handler: autoload
// skipping a torn or corrupt snapshot, stale temp files removed, which snapshot a run resumed
// from, an extension's on_error or finalize that threw while another error was being handled,
// keys that a non-strict load left alone. The default handler prints "tth: <message>" to
// stderr; install your own to route the messages into your logging, or to collect them in a
// test (as LibTorch's `c10::WarningHandler` or LevelDB's `info_log`).
//
//   auto previous = tth::set_warning_handler([&](const std::string& m) { log.push_back(m); });
//   ...
//   tth::set_warning_handler(previous);
//
// Thread safety: both functions may be called from any thread. The handler may be called
// from several threads at once (an asynchronous writer's warning beside the training
// thread's), so a handler that keeps state guards it.
#pragma once

#include <functional>
#include <string>

namespace tth {

/// Receives one warning, without prefix or trailing newline.
using WarningHandler = std::function<void(const std::string& message)>;

/// Installs `handler` (an empty one restores the default, stderr with the prefix "tth: ") and
/// returns the handler it replaces.
WarningHandler set_warning_handler(WarningHandler handler);

/// Sends `message` to the current handler. Never throws: a handler's exception is swallowed.
void warn(const std::string& message) noexcept;

}  // namespace tth
