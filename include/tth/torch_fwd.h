// Forward declarations of the LibTorch classes that public headers name, so that those
// headers need not include LibTorch's (slow to compile) headers for them.
#pragma once

namespace torch {
namespace nn {
class Module;
template <typename Contained>
class ModuleHolder;
}  // namespace nn
namespace optim {
class Optimizer;
class LRScheduler;
}  // namespace optim
namespace serialize {
class OutputArchive;
class InputArchive;
}  // namespace serialize
}  // namespace torch
