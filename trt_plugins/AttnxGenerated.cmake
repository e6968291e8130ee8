# attnx_generate_fields(<dir>)
#
# Writes the plugins' C++ field layer, generated from the op registry by attnx/plugins/codegen.py
# (per op <op>Params.h, free of TensorRT, and <op>Fields.h), into <dir>/attnx_generated, so that
# sources include "attnx_generated/<op>Params.h" with <dir> on their include path. It runs at configure
# time, and CMake configures again when a file of attnx/ops or the generator changes; the generator
# rewrites only headers whose text changed, so a rebuild recompiles only what includes those.
#
# ATTNX_PYTHON is the interpreter that imports attnx; `attnx plugins build` passes its own, and
# ATTNX_PACKAGE_DIR, the attnx package it imports: the checkout's attnx/ beside trt_plugins/ (the
# default), or site-packages/attnx for the sources a wheel carries in attnx/_trt_plugins.
set(ATTNX_PYTHON "" CACHE FILEPATH "Python interpreter that imports attnx (`attnx plugins build` passes its own)")
set(ATTNX_PACKAGE_DIR "${CMAKE_CURRENT_LIST_DIR}/../attnx" CACHE PATH
    "the attnx package whose op registry generates the fields (`attnx plugins build` passes it)")

function(attnx_generate_fields dir)
  if(NOT ATTNX_PYTHON)
    message(FATAL_ERROR "ATTNX_PYTHON is not set; expected -DATTNX_PYTHON=<python that imports attnx>. The plugins' "
                        "fields are generated from the op registry (attnx/plugins/codegen.py): build with "
                        "`attnx plugins build`, which passes it")
  endif()
  execute_process(COMMAND "${ATTNX_PYTHON}" -m attnx.plugins.codegen --out "${dir}/attnx_generated"
                  WORKING_DIRECTORY "${ATTNX_PACKAGE_DIR}/.." RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "`${ATTNX_PYTHON} -m attnx.plugins.codegen` failed (${status}); expected it to write the "
                        "plugins' field headers into ${dir}/attnx_generated:\n${err}")
  endif()
  file(GLOB_RECURSE specs CONFIGURE_DEPENDS "${ATTNX_PACKAGE_DIR}/ops/*.py")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${specs} "${ATTNX_PACKAGE_DIR}/plugins/codegen.py")
  message(STATUS "attnx: plugin fields generated from the op registry in ${dir}/attnx_generated")
endfunction()
