"""The plain-PyTorch reference of every quantizer and GEMM: the definition of correct (no Triton)."""
