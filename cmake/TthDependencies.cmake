# The library's dependencies, found the same way by the build and by the installed config.
include(CMakeFindDependencyMacro)
if(NOT TARGET torch)
  # TorchConfig warns about a missing kineto on CPU builds; nothing here needs it.
  find_dependency(Torch)
endif()
if(NOT TARGET fmt::fmt)
  find_dependency(fmt)
endif()
