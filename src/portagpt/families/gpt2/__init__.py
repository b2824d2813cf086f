"""GPT-2: learned absolute positions, pre-LayerNorm blocks, GELU-tanh MLP, tied head (HF)."""

from .config import GPT2Config
from .model import GPT2Model

__all__ = ["GPT2Config", "GPT2Model"]
