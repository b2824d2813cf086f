"""`portagpt train --compile` compiles each family's whole training forward as one graph.

A graph break in the forward splits it into frames that dynamo compiles one by
one; a frame that takes the layer index as an argument is then recompiled per
layer, and past ``torch._dynamo.config.recompile_limit`` (8) the remaining
layers silently run eagerly. ``torch._dynamo.explain`` traces without
compiling (no C++ compiler needed) and counts the graphs and the breaks.
"""

from __future__ import annotations

import pytest
import torch

from portagpt.registry import get_registry


@pytest.mark.parametrize("family", sorted(get_registry().families))
def test_training_forward_is_one_graph(family) -> None:
    fam = get_registry().get(family)
    cfg = fam.smoke_config
    torch.manual_seed(0)
    model = fam.build_model(cfg).train()
    vocab = getattr(cfg, "vocab_size", 64)
    ids = torch.randint(0, vocab, (2, 16))
    torch._dynamo.reset()
    found = torch._dynamo.explain(model)(ids)
    reasons = [str(b.reason).splitlines()[0] for b in found.break_reasons]
    assert found.graph_break_count == 0, f"{family}: graph breaks: {reasons}"
    assert found.graph_count == 1
