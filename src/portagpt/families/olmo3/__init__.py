"""Olmo 3: post-norm blocks, QK-norm over whole projections, 3:1 sliding/full, YaRN."""

from .config import Olmo3Config
from .model import Olmo3ForCausalLM

__all__ = ["Olmo3Config", "Olmo3ForCausalLM"]
