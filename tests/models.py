"""Tiny models shared by the backend tests (small enough to compile in seconds on 2 CPU cores)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """Embedding -> MLP block with biases on 3-D activations -> frozen linear -> untied head + tied head."""

    def __init__(self, vocab: int = 96, dim: int = 64, hidden: int = 128):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.frozen = nn.Linear(dim, dim, bias=False)
        self.frozen.weight.requires_grad_(False)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx)  # [B, S, dim]
        h = h + self.down(F.gelu(self.up(h)))
        h = self.frozen(h)
        logits = self.lm_head(h)  # untied head (skipped by name)
        tied = F.linear(h, self.emb.weight)  # tied head (skipped: shares the embedding's weight)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten()) + 0.1 * F.cross_entropy(tied.flatten(0, 1), targets.flatten())


def make_tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def batch(b: int = 2, s: int = 16, vocab: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, (b, s + 1), generator=g)
    return idx[:, :-1], idx[:, 1:]


def train_steps(model: nn.Module, steps: int, seed: int = 0, b: int = 2, s: int = 16) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """Run forward+backward ``steps`` times (no optimizer step, so every step sees the same weights)."""
    out = []
    for i in range(steps):
        for p in model.parameters():
            p.grad = None
        loss = model(*batch(b, s, seed=seed + i))
        loss.backward()
        out.append((loss.item(), {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    return out
