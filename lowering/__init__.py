"""Lowering of the fp4compile ops: scale layouts and kernel selection (installed as ``fp4compile.lowering``)."""
