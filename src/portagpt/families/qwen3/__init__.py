"""Qwen3, dense and MoE: QK-norm per head, GQA, SwiGLU or token-choice experts, RoPE."""

from .config import Qwen3Config
from .model import Qwen3ForCausalLM

__all__ = ["Qwen3Config", "Qwen3ForCausalLM"]
