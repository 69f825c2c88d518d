"""Graph passes over the joint forward+backward graph (installed as ``fp4compile.passes``).

The pipeline (``pipeline.py``) runs, in order: find_matmuls, assign_roles, apply_policy, plan_layouts,
rewrite_linears, verify_graph; ``register_pass`` adds a user's pass. Before autograd, on Dynamo's graph, the
backend runs ``fuse_linears`` (linear layers sharing an input become one), so that the joint graph holds the
fused layer's forward and backward GEMMs.
"""

from fp4compile.passes.context import PassContext
from fp4compile.passes.pipeline import pipeline, register_pass, run_pipeline, unregister_pass
from fp4compile.passes.site import MatmulSite, Role

__all__ = ["MatmulSite", "PassContext", "Role", "pipeline", "register_pass", "run_pipeline", "unregister_pass"]
