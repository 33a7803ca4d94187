// Memory for a tensor that a reader fills at once (npz members, archive storages). Private.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tth {

// Fresh memory is faulted in page by page on first touch; in a VM that costs about 3 us per
// 4 KiB page (200 ms for 64 MiB here), ten times the copy itself. Large tensors therefore get
// 2 MiB-aligned memory advised for transparent huge pages, which cuts the faults 512-fold
// where the kernel offers them on request (its madvise mode).
// `bytes` is the tensor's size in bytes (shape times element size, checked by the caller).
at::Tensor empty_for_filling(const std::vector<int64_t>& shape, at::ScalarType dtype,
                             uint64_t bytes);

}  // namespace tth
