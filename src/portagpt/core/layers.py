"""Shared building blocks: norms, MLPs and the token-routed mixture of experts.

Everything here is family-neutral. Norms compute in fp32 and cast back, as the
reference implementations do, so bf16 runs match fp32 runs closely.
``__init__`` only creates parameters of the right shape (meta-safe); values are
set by ``reset_parameters`` (called by ``init_weights`` in each family).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear


class LayerNorm(nn.Module):
    """LayerNorm with optional bias, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.float() if self.bias is not None else None
        y = F.layer_norm(x.float(), (x.shape[-1],), self.weight.float(), bias, self.eps)
        return y.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32.

    ``unit_offset=True`` scales by ``(1 + weight)`` (weights initialised at 0), the
    convention of checkpoints that store the offset form. ``cast_before_scale``
    picks where the result returns to the input dtype: before multiplying by the
    weight (the common convention) or after (the offset-form convention); both
    are identical in fp32.
    """

    def __init__(
        self,
        dim: int,
        eps: float = 1e-6,
        unit_offset: bool = False,
        cast_before_scale: bool = True,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.cast_before_scale = cast_before_scale
        self.weight = nn.Parameter(torch.empty(dim))

    def reset_parameters(self) -> None:
        if self.unit_offset:
            nn.init.zeros_(self.weight)
        else:
            nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (h * (1.0 + self.weight.float())).to(dtype)
        if self.cast_before_scale:
            return self.weight * h.to(dtype)
        return (self.weight * h).to(dtype)


ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
}


def activation(name: str):
    """The activation function for a config.json ``hidden_act`` / ``activation_function`` name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        from ..errors import ConfigError

        raise ConfigError(
            f"Unknown activation {name!r}. Known: {', '.join(sorted(ACTIVATIONS))}."
        ) from None


class Activation(nn.Module):
    """An activation (by config.json name) as a module, for ``nn.Sequential`` layouts."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.fn = activation(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``: SwiGLU / GeGLU, names as in most gated-MLP checkpoints."""

    def __init__(self, dim: int, hidden: int, act: str = "silu", bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = Linear(dim, hidden, bias=bias)
        self.up_proj = Linear(dim, hidden, bias=bias)
        self.down_proj = Linear(hidden, dim, bias=bias)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class MLP(nn.Module):
    """``proj(act(fc(x)))``: the classic two-layer feed-forward block."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu_new", bias: bool = True) -> None:
        super().__init__()
        self.fc = Linear(dim, hidden, bias=bias)
        self.proj = Linear(hidden, dim, bias=bias)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class MoE(nn.Module):
    """Token-choice mixture of gated-MLP experts.

    Router: ``softmax(gate(x))`` over experts in fp32, keep the top-k, and
    renormalise the kept weights to sum to one when ``norm_topk_prob``. Each
    expert only sees the tokens routed to it. Names follow per-expert
    checkpoints: ``gate.weight``, ``experts.{e}.{gate,up,down}_proj.weight``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        n_experts: int,
        top_k: int,
        norm_topk_prob: bool = True,
        act: str = "silu",
    ) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.gate = Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(GatedMLP(dim, hidden, act) for _ in range(n_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k expert ids and their weights for each token of ``x`` (N, dim)."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)  # (N, E)
        weights, ids = torch.topk(probs, self.top_k, dim=-1)  # (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return ids, weights.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, dim)
        ids, weights = self.route(x)
        out = torch.zeros_like(x)
        # One pass per expert that received tokens: gather its tokens, run, scatter back.
        hit = torch.zeros(self.n_experts, dtype=torch.bool, device=x.device)
        hit[ids.flatten()] = True
        experts = hit.nonzero().flatten().tolist()
        if self.training and torch.is_grad_enabled():
            # every expert runs (on no tokens if none were routed to it), so each gets a
            # (zero) gradient: DDP and FSDP need the same gradients on every process
            experts = list(range(self.n_experts))
        for e in experts:
            token, slot = (ids == e).nonzero(as_tuple=True)
            y = self.experts[e](x[token]) * weights[token, slot, None]
            out.index_add_(0, token, y)
        return out.reshape(shape)


def init_normal_(module: nn.Module, std: float = 0.02, scaled_std: dict[str, float] | None = None) -> None:
    """GPT-style init: N(0, std) for Linear/Embedding weights, zero biases, norms reset.

    ``scaled_std`` maps parameter-name suffixes to their own std (e.g. residual
    projections scaled by 1/sqrt(2 * n_layers)).
    """
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            s = std
            for suffix, val in (scaled_std or {}).items():
                if name.endswith(suffix):
                    s = val
            nn.init.normal_(sub.weight, mean=0.0, std=s)
            if getattr(sub, "bias", None) is not None:
                nn.init.zeros_(sub.bias)
        elif hasattr(sub, "reset_parameters") and sub is not module and not list(sub.children()):
            if not isinstance(sub, (nn.Linear, nn.Embedding)):
                sub.reset_parameters()


def residual_std(n_layers: int, std: float = 0.02) -> float:
    """The classic residual-projection init std, ``std / sqrt(2 * n_layers)``."""
    return std / math.sqrt(2 * n_layers)
