# Install headers, the library, the tth tool and TorchTrainerHookConfig.cmake, so consumers can
# `find_package(TorchTrainerHook)` and link `TorchTrainerHook::tth`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(TTH_CONFIG_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/TorchTrainerHook)
install(TARGETS tth_tool RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS tth EXPORT TorchTrainerHookTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/tth DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT TorchTrainerHookTargets NAMESPACE TorchTrainerHook::
  DESTINATION ${TTH_CONFIG_DIR})
configure_package_config_file(cmake/TorchTrainerHookConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/TorchTrainerHookConfig.cmake INSTALL_DESTINATION ${TTH_CONFIG_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/TorchTrainerHookConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/TorchTrainerHookConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/TorchTrainerHookConfigVersion.cmake
  cmake/TthDependencies.cmake
  DESTINATION ${TTH_CONFIG_DIR})
