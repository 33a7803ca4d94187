# The library's dependencies, found the same way by the build and by the installed config.
include(CMakeFindDependencyMacro)
if(NOT TARGET torch)
  find_dependency(Torch)
endif()
if(NOT TARGET fmt::fmt)
  find_dependency(fmt)
endif()
if(NOT TARGET ZLIB::ZLIB)
  find_dependency(ZLIB)
endif()
# libdeflate's CRC-32 is about 2.3x zlib's here (13.5 vs 5.9 GB/s), which matters for large
# snapshots; Debian ships no CMake package for it.
if(NOT TARGET TorchTrainerHook::deflate)
  find_library(TTH_DEFLATE_LIBRARY NAMES deflate)
  find_path(TTH_DEFLATE_INCLUDE_DIR NAMES libdeflate.h)
  if(NOT TTH_DEFLATE_LIBRARY OR NOT TTH_DEFLATE_INCLUDE_DIR)
    message(FATAL_ERROR "libdeflate not found: install libdeflate-dev")
  endif()
  add_library(TorchTrainerHook::deflate UNKNOWN IMPORTED)
  set_target_properties(TorchTrainerHook::deflate PROPERTIES
    IMPORTED_LOCATION "${TTH_DEFLATE_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${TTH_DEFLATE_INCLUDE_DIR}")
endif()
# PLplot draws PlotReport's pictures (tth/extensions/plot_report.h); its Cairo devices come
# from a separate package. Debian ships a pkg-config module and no CMake package.
if(NOT TARGET TorchTrainerHook::plplot)
  find_dependency(PkgConfig)
  pkg_check_modules(TTH_PLPLOT QUIET IMPORTED_TARGET plplot)
  if(NOT TTH_PLPLOT_FOUND)
    message(FATAL_ERROR
      "PLplot not found through pkg-config: install libplplot-dev plplot-driver-cairo")
  endif()
  add_library(TorchTrainerHook::plplot INTERFACE IMPORTED)
  set_target_properties(TorchTrainerHook::plplot PROPERTIES
    INTERFACE_LINK_LIBRARIES PkgConfig::TTH_PLPLOT)
endif()
