"""Triton (and CUDA) kernels, each with a reference twin (installed as ``fp4compile.kernels``)."""
