"""fp4compile: FP4 training of PyTorch models with one line, ``torch.compile(model, backend="quartet")``.

The public surface: recipes and quantizers (with the plug-in registry), the reference quantizers
(``fake_quantize``), the eager reference linear, and, with the backend, ``explain``.
"""

from fp4compile import ops, passes  # ops registers torch.ops.fp4compile
from fp4compile.backend import quartet_backend
from fp4compile.config import Gemm, GemmRecipe, Recipe, Source, get_recipe, recipes, register_recipe
from fp4compile.explain import Report, explain
from fp4compile.passes import MatmulSite, PassContext, register_pass
from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.quantizers import Quantizer, fake_quantize, get_quantizer, quantizers, register_quantizer
from fp4compile.reference.linear import ReferenceLinear, quantize_linears, reference_linear
from fp4compile.rotations import Rotation, RotationKind

__all__ = [
    "Gemm",
    "MatmulSite",
    "PassContext",
    "Report",
    "explain",
    "ops",
    "passes",
    "quartet_backend",
    "register_pass",
    "GemmRecipe",
    "QuantizedTensor",
    "Quantizer",
    "Recipe",
    "ReferenceLinear",
    "Rotation",
    "RotationKind",
    "ScaleFormat",
    "Source",
    "fake_quantize",
    "get_quantizer",
    "get_recipe",
    "quantize_linears",
    "quantizers",
    "recipes",
    "reference_linear",
    "register_quantizer",
    "register_recipe",
]
