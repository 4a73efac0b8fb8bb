"""CUDA execution-model emulator: compiles kernels/*.cu for the CPU and runs them with one
fiber per CUDA thread, so the GPU code path can be tested without a GPU (see README.md)."""
