"""GPT-2: Hugging Face names <-> chapter-5 names.

HF stores attention and MLP weights as Conv1D, ``(in, out)``, so every
projection is transposed, and q/k/v are one fused ``c_attn`` split in three.
Hub checkpoints may omit the ``transformer.`` prefix; both spellings map.
The chapter-5 causal-mask buffer ``att.mask`` and HF's old ``attn.bias`` /
``attn.masked_bias`` buffers are dropped.
"""

from __future__ import annotations

from typing import Any

from ...adapters import Rule, WeightMap, drop, rename, split, transpose

T = transpose()
QKV = tuple(f"trf_blocks.{{}}.att.W_{p}" for p in ("query", "key", "value"))


def weight_map(cfg: Any) -> WeightMap:
    rules: list[Rule] = []
    for pre in ("transformer.", ""):
        h, n = pre + "h.{}.", "trf_blocks.{}."
        rules += [
            rename(pre + "wte.weight", "tok_emb.weight"),
            rename(pre + "wpe.weight", "pos_emb.weight"),
            Rule((h + "attn.c_attn.weight",), tuple(q + ".weight" for q in QKV), split(3, then=T)),
            Rule((h + "attn.c_attn.bias",), tuple(q + ".bias" for q in QKV), split(3)),
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
