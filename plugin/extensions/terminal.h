// The terminal escape codes that ProgressBar and PrintReport share. Private.
#pragma once

namespace tth::terminal {

// Erases from the cursor to the end of the screen: a progress display below the cursor.
constexpr char kEraseBelow[] = "\033[J";
// Moves the cursor up {} lines (a fmt format string).
constexpr char kCursorUp[] = "\033[{}A";

}  // namespace tth::terminal
