"""GPT-2: Hugging Face names <-> chapter-5 names.

HF stores attention and MLP weights as Conv1D, ``(in, out)``, so every
projection is transposed, and q/k/v are one fused ``c_attn`` split in three.
Hub checkpoints may omit the ``transformer.`` prefix; both spellings map.
The chapter-5 causal-mask buffer ``att.mask`` and HF's old ``attn.bias`` /
``attn.masked_bias`` buffers are dropped.
"""

from __future__ import annotations

from ...adapters.weights import Rule, WeightMap, drop, rename, split, transpose
from .config import GPT2Config

T = transpose()


def weight_map(cfg: GPT2Config) -> WeightMap:
    rules: list[Rule] = []
    for pre in ("transformer.", ""):
        h = pre + "h.{}."
        n = "trf_blocks.{}."
        rules += [
            rename(pre + "wte.weight", "tok_emb.weight"),
            rename(pre + "wpe.weight", "pos_emb.weight"),
            Rule((h + "attn.c_attn.weight",), (n + "att.W_query.weight", n + "att.W_key.weight", n + "att.W_value.weight"), split(3, dim=0, then=T)),
            Rule((h + "attn.c_attn.bias",), (n + "att.W_query.bias", n + "att.W_key.bias", n + "att.W_value.bias"), split(3, dim=0)),
            rename(h + "attn.c_proj.weight", n + "att.out_proj.weight", T),
            rename(h + "attn.c_proj.bias", n + "att.out_proj.bias"),
            rename(h + "mlp.c_fc.weight", n + "ff.layers.0.weight", T),
            rename(h + "mlp.c_fc.bias", n + "ff.layers.0.bias"),
            rename(h + "mlp.c_proj.weight", n + "ff.layers.2.weight", T),
            rename(h + "mlp.c_proj.bias", n + "ff.layers.2.bias"),
            rename(h + "ln_1.weight", n + "norm1.scale"),
            rename(h + "ln_1.bias", n + "norm1.shift"),
            rename(h + "ln_2.weight", n + "norm2.scale"),
            rename(h + "ln_2.bias", n + "norm2.shift"),
            rename(pre + "ln_f.weight", "final_norm.scale"),
            rename(pre + "ln_f.bias", "final_norm.shift"),
            drop(h + "attn.bias"),
            drop(h + "attn.masked_bias"),
        ]
    rules.append(rename("lm_head.weight", "out_head.weight", optional=cfg.tie_word_embeddings))
    rules.append(drop("trf_blocks.{}.att.mask"))
    return WeightMap(rules)


def tied_weights(cfg: GPT2Config) -> tuple[tuple[str, str], ...]:
    return (("out_head.weight", "tok_emb.weight"),) if cfg.tie_word_embeddings else ()
