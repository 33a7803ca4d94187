#include "tth/writer.h"

#include "check_argument.h"
#include "tth/atomic_file.h"

namespace tth {

SimpleWriter::SimpleWriter(SaveFunction savefun) : savefun_(std::move(savefun)) {
  check_argument(static_cast<bool>(savefun_), "SimpleWriter", "savefun", "must be callable");
}

void SimpleWriter::write(const std::string& path, StateDict state,
                         const std::function<void()>& committed) {
  atomic_write(path, [&](const std::string& temp) { savefun_(temp, state); });
  if (committed) committed();
}

}  // namespace tth
