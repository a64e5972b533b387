// The entry of each program with mhc's command line (mhc, and mhc_emu on the CPU emulation of
// CUDA): the devices it links, then the command line (app.cpp). Apart from app.cpp so that the
// command line is compiled once, whatever the program's devices.
#include "cli/cli.h"
#if MHC_HAVE_CUDA || MHC_CUDA_EMU
#include "train/engine_cuda.h"
#endif

int main(int argc, char** argv) {
#if MHC_HAVE_CUDA || MHC_CUDA_EMU
    mhc::cuda_engine_register();  // --device cuda
#endif
    return mhc::cli::run(argc, argv);
}
