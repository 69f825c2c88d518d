"""Plug-ins: a custom quantizer in a custom recipe, and a custom graph pass, through the public API.

1. ``nvfp4_rms``: NVFP4 whose group scales come from the group's RMS (a QuEST-style clip at 2.5 RMS)
   instead of its absolute maximum. Registered with ``fp4compile.register_quantizer``; the built-ins use
   the same call.
2. A recipe ``rms-fwd`` that uses it for the forward GEMM and Quartet II's MS-EDEN backward.
3. A pass ``keep_first_layer_high_precision`` inserted after the built-in policy pass: it keeps
   ``layers.0`` in high precision and says why in ``explain()``.

    python examples/custom_quantizer.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import fp4compile
from fp4compile import formats
from fp4compile.quantized import QuantizedTensor, ScaleFormat
from fp4compile.reference.nvfp4 import group_scale_bytes, tensor_scale

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.llama import Llama, LlamaConfig, get_batch, stdlib_text

CLIP_RMS = 2.5  # clip each group at 2.5 x its RMS, mapped to the grid's 6


def nvfp4_rms(x: torch.Tensor, seed: int | None) -> QuantizedTensor:
    """NVFP4 with RMS-based group scales: s8 = RN_E4M3(2.5 rms_g / 6 / s32), RTN, saturating."""
    groups = x.float().unflatten(-1, (-1, 16))  # [..., K/16, 16]
    rms = groups.pow(2).mean(-1).sqrt()
    s32 = tensor_scale(x, 448.0, 6.0)
    byte = group_scale_bytes(CLIP_RMS * rms, s32, 6.0)
    codes = formats.e2m1_encode_rtn(groups / (formats.e4m3_decode(byte) * s32)[..., None])
    return QuantizedTensor(formats.pack_e2m1(codes.flatten(-2)), byte, ScaleFormat.E4M3, 16, s32)


fp4compile.register_quantizer("nvfp4_rms", nvfp4_rms, group_size=16, scale_format="e4m3", replace=True,
                              description="NVFP4, group scale from 2.5 x RMS (clipping), RTN")

RMS_FWD = fp4compile.Recipe(
    name="rms-fwd",
    description="forward: nvfp4_rms on X and W; backward: Quartet II (RHT-128 + MS-EDEN)",
    output=fp4compile.GemmRecipe("nvfp4_rms", "nvfp4_rms"),
    grad_input=fp4compile.GemmRecipe("nvfp4_ms_eden", "nvfp4_ms_eden", "random_hadamard-128"),
    grad_weight=fp4compile.GemmRecipe("nvfp4_ms_eden", "nvfp4_ms_eden", "random_hadamard-128"),
)


def keep_first_layer_high_precision(gm: torch.fx.GraphModule, ctx: fp4compile.PassContext) -> None:
    """A policy plug-in: the first block stays in high precision (a common stability trick)."""
    for site in ctx.sites:
        if site.quantized and site.name.startswith("layers.0."):
            site.decide(False, "custom policy: first block kept in high precision")


def main() -> None:
    fp4compile.register_pass(keep_first_layer_high_precision, after="apply_policy")
    print("pipeline:", " -> ".join(fp4compile.passes.pipeline()))
    x = torch.randn(4, 64)
    err = {q: (fp4compile.fake_quantize(x, q) - x).pow(2).mean().item() for q in ("nvfp4_rtn", "nvfp4_rms")}
    print("MSE on N(0,1):", {k: f"{v:.4f}" for k, v in err.items()})

    torch.manual_seed(0)
    model = Llama(LlamaConfig(layers=2))
    data = stdlib_text(1 << 20)
    gen = torch.Generator().manual_seed(0)
    print(fp4compile.explain(model, *get_batch(data, 4, 64, gen), recipe=RMS_FWD, baseline=False))

    torch._dynamo.reset()
    compiled = torch.compile(model, backend="quartet", options={"recipe": RMS_FWD})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(10):
        loss = compiled(*get_batch(data, 4, 64, gen))
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"step {step}: loss {loss.item():.4f}")
    fp4compile.passes.unregister_pass("keep_first_layer_high_precision")


if __name__ == "__main__":
    main()
