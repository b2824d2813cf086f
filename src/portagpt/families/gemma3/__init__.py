"""Gemma 3 (text): sliding/global attention, two RoPE bases, (1 + w) RMSNorm, QK-norm, GeGLU."""

from .config import Gemma3Config
from .model import Gemma3ForCausalLM

__all__ = ["Gemma3Config", "Gemma3ForCausalLM"]
