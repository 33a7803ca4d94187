# Builds tests/consumer/main.cpp against TorchTrainerHook twice: through find_package on a copy
# installed from the build tree that runs this test (BUILD_DIR, already built: installing it
# instead of building the library again halves the test's time), and through add_subdirectory
# of the source tree. Run by ctest.
#   cmake -DSOURCE_DIR=... -DBUILD_DIR=... -DWORK_DIR=... -DGENERATOR=... -P run_consumer_test.cmake
file(REMOVE_RECURSE ${WORK_DIR})
set(here ${SOURCE_DIR}/tests/consumer)
set(launcher)
find_program(CCACHE ccache)
if(CCACHE)
  set(launcher -DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE})
endif()

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: '${ARGN}' failed (${rc})")
  endif()
endfunction()

# 1. Install the library, then find_package it.
step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
step(${CMAKE_COMMAND} -S ${here}/find_package -B ${WORK_DIR}/fp -G ${GENERATOR} ${launcher}
     -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
step(${CMAKE_COMMAND} --build ${WORK_DIR}/fp)
step(${WORK_DIR}/fp/consumer)

# 2. add_subdirectory of the source tree.
step(${CMAKE_COMMAND} -S ${here}/add_subdirectory -B ${WORK_DIR}/as -G ${GENERATOR} ${launcher}
     -DCMAKE_BUILD_TYPE=Release -DTTH_SOURCE_DIR=${SOURCE_DIR})
step(${CMAKE_COMMAND} --build ${WORK_DIR}/as)
step(${WORK_DIR}/as/consumer)
