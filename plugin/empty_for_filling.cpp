#include "empty_for_filling.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace tth {

at::Tensor empty_for_filling(const std::vector<int64_t>& shape, at::ScalarType dtype,
                             uint64_t bytes) {
  constexpr uint64_t kHugePage = uint64_t{2} << 20;
  if (bytes < 2 * kHugePage) return at::empty(shape, at::TensorOptions().dtype(dtype));
  const uint64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* memory = nullptr;
  if (::posix_memalign(&memory, kHugePage, rounded) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(memory, rounded, MADV_HUGEPAGE);  // advice only: ignoring a failure is right
#endif
  try {
    return at::from_blob(
        memory, shape, [](void* data) { std::free(data); }, at::TensorOptions().dtype(dtype));
  } catch (...) {
    std::free(memory);
    throw;
  }
}

}  // namespace tth
