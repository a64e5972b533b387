# The CUDA backend (docs/GPU.md), included by the top-level CMakeLists.txt after mhc_core.
#
# MHC_CUDA: AUTO (the default: built when a CUDA compiler is found), ON (required), OFF (CPU only).
# When built: the static library mhc_cuda (src/**/*.cu, src/**/*_cuda.cpp, src/cuda/*.cpp) for
# sm_90 (Hopper), linked with the CUDA runtime and cuBLAS, and MHC_HAVE_CUDA=1 for its users.
#
# MHC_CUDA_EMU (default ON on x86-64): the same CUDA sources compiled by the C++ compiler against a
# CPU emulation of CUDA and cuBLAS (src/cuda/emu.h) into mhc_cuda_emu, so the GPU tests also run,
# as tests/mhc_tests_emu, on machines without a GPU or without nvcc.
set(MHC_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO (when nvcc is found), ON or OFF")
set_property(CACHE MHC_CUDA PROPERTY STRINGS AUTO ON OFF)
set(MHC_HAVE_CUDA OFF)
if(NOT MHC_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)  # sm_90 machine code plus compute_90 PTX
    endif()
    enable_language(CUDA)
    # CMake 3.25 knows no C++20 flag for nvcc (and then refuses a CUDA target that links C++20 code).
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    find_package(CUDAToolkit REQUIRED)
    set(MHC_HAVE_CUDA ON)
  elseif(MHC_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MHC_CUDA=ON, but no CUDA compiler was found (put nvcc on the PATH or set CUDACXX)")
  endif()
endif()
message(STATUS "mhc: CUDA backend ${MHC_HAVE_CUDA} (MHC_CUDA=${MHC_CUDA})")

file(GLOB_RECURSE MHC_CU_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/*.cu)
file(GLOB_RECURSE MHC_CUDA_HOST_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/*_cuda.cpp
     ${PROJECT_SOURCE_DIR}/src/cuda/*.cpp)
list(FILTER MHC_CUDA_HOST_SOURCES EXCLUDE REGEX "/src/cuda/emu[a-z_]*\\.cpp$")

if(MHC_HAVE_CUDA)
  add_library(mhc_cuda STATIC ${MHC_CU_SOURCES} ${MHC_CUDA_HOST_SOURCES})
  target_include_directories(mhc_cuda PRIVATE ${PROJECT_SOURCE_DIR}/src)
  # The static CUDA runtime: the binaries need only the driver and cuBLAS where they run. cuBLAS is
  # opened when first used (src/cuda/runtime.cpp), not linked, so a CPU run does not load it.
  target_link_libraries(mhc_cuda PUBLIC mhc_core CUDA::cudart_static ${CMAKE_DL_LIBS})
  target_compile_definitions(mhc_cuda PUBLIC MHC_HAVE_CUDA=1)
  # fp32 as written: no fast-math (IEEE division and square root, denormals kept); host code warns.
  set_target_properties(mhc_cuda PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON)
  target_compile_options(mhc_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unknown-pragmas>)
endif()

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(MHC_CUDA_EMU_DEFAULT ON)
else()
  set(MHC_CUDA_EMU_DEFAULT OFF)
endif()
option(MHC_CUDA_EMU "Build the CUDA sources against the CPU emulation (src/cuda/emu.h) and test them" ${MHC_CUDA_EMU_DEFAULT})
if(MHC_CUDA_EMU AND MHC_BUILD_TESTS)
  # Each .cu file compiled as C++ through a one-line wrapper (a source's language is per file, not
  # per target, and the same file is CUDA in mhc_cuda).
  set(MHC_EMU_SOURCES ${PROJECT_SOURCE_DIR}/src/cuda/emu.cpp ${PROJECT_SOURCE_DIR}/src/cuda/emu_stream.cpp
      ${PROJECT_SOURCE_DIR}/src/cuda/emu_cublas.cpp
      ${MHC_CUDA_HOST_SOURCES})
  foreach(cu ${MHC_CU_SOURCES})
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR}/src ${cu})
    string(REPLACE "/" "_" name ${rel})
    set(wrapper ${CMAKE_BINARY_DIR}/emu/${name}.cpp)
    file(CONFIGURE OUTPUT ${wrapper} CONTENT "#include \"${cu}\"\n")
    list(APPEND MHC_EMU_SOURCES ${wrapper})
  endforeach()
  add_library(mhc_cuda_emu STATIC ${MHC_EMU_SOURCES})
  target_include_directories(mhc_cuda_emu PRIVATE ${PROJECT_SOURCE_DIR}/src)
  # A kernel's local variables start as a byte pattern (0xFE: about -1.7e38 as a float, -5.4e303
  # as a double), not as whatever the host stack held: a value read before it is written, garbage on
  # a GPU, then ruins the result here too. PUBLIC: the emulation's tests plant such a read.
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag(-ftrivial-auto-var-init=pattern MHC_HAVE_AUTO_VAR_INIT)
  if(MHC_HAVE_AUTO_VAR_INIT)
    target_compile_options(mhc_cuda_emu PUBLIC -ftrivial-auto-var-init=pattern)
    target_compile_definitions(mhc_cuda_emu PUBLIC MHC_EMU_PATTERN_INIT=1)
  endif()
  target_compile_definitions(mhc_cuda_emu PUBLIC MHC_CUDA_EMU=1)
  target_link_libraries(mhc_cuda_emu PUBLIC mhc_core)
endif()
