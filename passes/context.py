"""What the passes of one graph share: the options, the parameter names, the sites they found."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch.fx as fx

from fp4compile.options import Options
from fp4compile.passes.site import MatmulSite


@dataclass
class PassContext:
    options: Options
    state: int  # identifies the compiled graph (its step counters)
    param_names: dict[str, str] = field(default_factory=dict)  # placeholder name -> parameter FQN
    sites: list[MatmulSite] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    training: bool = False

    def linears(self) -> dict[str, list[MatmulSite]]:
        """Sites grouped by linear layer (key), forward first."""
        groups: dict[str, list[MatmulSite]] = {}
        for site in self.sites:
            if site.key:
                groups.setdefault(site.key, []).append(site)
        return groups


def placeholder_param_names(joint: fx.GraphModule, dynamo_params: list[str | None]) -> dict[str, str]:
    """Map the joint graph's input placeholders (``primals_i`` / ``argi_1``) to parameter FQNs.

    AOTAutograd keeps the order of the Dynamo graph's placeholders; tangents come after them.
    """
    inputs = [n for n in joint.graph.nodes if n.op == "placeholder" and not n.name.startswith("tangents")]
    return {n.name: p for n, p in zip(inputs, dynamo_params, strict=False) if p}
