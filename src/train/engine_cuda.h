// The GPU as an engine (train/engine.h): `--device cuda`. A program that links the CUDA backend
// calls cuda_engine_register() once at start; without it, --device cuda says the build has no CUDA.
#pragma once

namespace mhc {

void cuda_engine_register();

}  // namespace mhc
