"""transformers as the reference: tiny random checkpoints it writes itself, and its logits.

Used by the parity tests of every family and by the conformance kit. Every
tensor (norms and biases included) is perturbed away from its initial value,
so a tensor that is skipped or mis-mapped changes the logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Add N(0, scale) noise to every parameter and floating buffer, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * scale)


def write_hf_checkpoint(
    hf_config: Any,
    folder: str | Path,
    seed: int = 0,
    scale: float = 0.05,
    max_shard_size: str | None = None,
    tokenizer: Any = None,
) -> torch.nn.Module:
    """Build ``AutoModelForCausalLM.from_config(hf_config)`` with perturbed weights and save it.

    Returns the transformers model (in eval mode, fp32) for side-by-side comparison.
    ``tokenizer`` (a ``transformers.PreTrainedTokenizerFast``) is saved alongside when given.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    perturb_(model, seed, scale)
    model.eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(folder), **kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return model


@torch.no_grad()
def hf_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.logits.float()


@torch.no_grad()
def hf_greedy(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    """transformers' greedy ``generate`` (new ids only), ignoring eos so lengths are fixed."""
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=0,
    )
    return out[:, input_ids.shape[1]:]
