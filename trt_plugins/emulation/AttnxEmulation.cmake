# attnx_add_emulated_library(<target> SOURCES <.cu files> [OTHER_SOURCES <.cpp files>]
#                            INCLUDE_DIRS <dirs>)
#
# A shared library of CUDA kernel sources compiled by the host compiler onto the CPU emulator
# (emulator.cpp). Each .cu, and each .cuh in INCLUDE_DIRS, is copied into one folder of the build
# tree with the two constructs no header can define rewritten, and with a #line directive so
# diagnostics and __FILE__ name the original (a quoted #include looks in the including file's folder
# first, so the copies include each other):
#   kernel<<<grid, block[, shared[, stream]]>>>(args)
#       -> kernel ^ ::attnx_emu::LaunchConfig(__FILE__, __LINE__, grid, block[, shared[, stream]])
#                 ^ ::attnx_emu::arguments(args)
#   extern __shared__ T name[];  ->  T* const name = static_cast<T*>(::attnx_emu::dynamicShared());
# Everything else is the source as nvcc sees it; include/attnx_emulation.h supplies the device
# language. The copies are remade when a source changes (CMake re-configures).
set(ATTNX_EMULATION_DIR "${CMAKE_CURRENT_LIST_DIR}")
option(ATTNX_EMU_UCONTEXT "switch fibers with ucontext, as off x86-64, instead of the x86-64 register switch" OFF)

function(attnx_add_emulated_library target)
  cmake_parse_arguments(ARG "" "" "SOURCES;OTHER_SOURCES;INCLUDE_DIRS" ${ARGN})
  set(device_headers)
  foreach(dir IN LISTS ARG_INCLUDE_DIRS)
    file(GLOB found CONFIGURE_DEPENDS "${dir}/*.cuh")
    list(APPEND device_headers ${found})
  endforeach()
  list(REMOVE_DUPLICATES device_headers)
  set(generated)
  foreach(src IN LISTS ARG_SOURCES device_headers)
    get_filename_component(src "${src}" ABSOLUTE)
    get_filename_component(name "${src}" NAME)
    file(READ "${src}" text)
    string(REPLACE "<<<" " ^ ::attnx_emu::LaunchConfig(__FILE__, __LINE__, " text "${text}")
    string(REPLACE ">>>" ") ^ ::attnx_emu::arguments" text "${text}")
    string(REGEX REPLACE "extern __shared__ ([A-Za-z_][A-Za-z_0-9: ]*[A-Za-z_0-9]) ([A-Za-z_][A-Za-z_0-9]*)\\[\\]"
           "\\1* const \\2 = static_cast<\\1*>(::attnx_emu::dynamicShared())" text "${text}")
    string(REGEX REPLACE "\\.cu$" ".cpp" name "${name}")
    set(out "${CMAKE_CURRENT_BINARY_DIR}/emulated/${name}")
    set(staged "${CMAKE_CURRENT_BINARY_DIR}/emulated-staging/${name}")
    file(WRITE "${staged}" "#line 1 \"${src}\"\n${text}")
    configure_file("${staged}" "${out}" COPYONLY) # touches the copy only when it changed
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${src}")
    if(name MATCHES "\\.cpp$")
      list(APPEND generated "${out}")
    endif()
  endforeach()
  add_library(${target} SHARED ${generated} ${ARG_OTHER_SOURCES} "${ATTNX_EMULATION_DIR}/emulator.cpp")
  # include/ first: its cuda_runtime.h stands in for CUDA's
  target_include_directories(${target} BEFORE PRIVATE "${ATTNX_EMULATION_DIR}/include")
  target_include_directories(${target} PRIVATE "${ATTNX_EMULATION_DIR}" ${ARG_INCLUDE_DIRS})
  # CUDA's headers for __half, __nv_bfloat16 and the runtime's types only; nothing is linked from CUDA
  target_include_directories(${target} SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  # stack-clash protection probes every page of a large frame, so a thread that outgrows its fiber
  # stack faults on the guard page below it rather than writing into another fiber's stack
  target_compile_options(${target} PRIVATE -include "${ATTNX_EMULATION_DIR}/include/attnx_emulation.h"
                         -fvisibility=hidden -fstack-clash-protection -Wall -Wextra -Wno-unknown-pragmas)
  if(ATTNX_EMU_UCONTEXT)
    target_compile_definitions(${target} PRIVATE ATTNX_EMU_UCONTEXT)
  endif()
  find_package(Threads REQUIRED)
  target_link_libraries(${target} PRIVATE Threads::Threads)
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  set_target_properties(${target} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
endfunction()
