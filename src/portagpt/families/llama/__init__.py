"""Llama 2 / 3 / 3.1 / 3.2: RMSNorm, grouped-query attention, SwiGLU, RoPE with llama3 scaling."""

from .config import LlamaConfig
from .model import LlamaForCausalLM

__all__ = ["LlamaConfig", "LlamaForCausalLM"]
