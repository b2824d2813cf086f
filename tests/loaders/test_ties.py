"""A checkpoint that stores a tied copy apart from its source: untied and kept, on every loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from portagpt.loaders import load_full


def _tied_llama_with_its_own_head(folder: Path) -> torch.nn.Module:
    """A tied-config Llama whose file also holds a different lm_head; returns transformers' untied twin."""
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    kw = dict(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    write_hf_checkpoint(LlamaConfig(tie_word_embeddings=True, **kw), folder)
    state = load_file(str(folder / "model.safetensors"))
    gen = torch.Generator().manual_seed(3)
    state["lm_head.weight"] = torch.randn(state["model.embed_tokens.weight"].shape, generator=gen)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    untied = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **kw)).eval()
    missing, unexpected = untied.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    return untied


@pytest.fixture(scope="module")
def stored_apart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("ties") / "ckpt"
    return folder, _tied_llama_with_its_own_head(folder)


@pytest.mark.parametrize("loader", ["meta", "safetensors", "state_dict", "hf"])
def test_a_stored_head_that_differs_from_the_embedding_unties_the_model_on_every_loader(
    stored_apart: tuple[Path, torch.nn.Module], loader: str
) -> None:
    folder, reference = stored_apart
    loaded = load_full(folder, loader=loader, tokenizer=False)
    (note,) = loaded.extras["notes"]
    assert "lm_head.weight" in note and "untied" in note
    assert loaded.config.tie_word_embeddings is False
    ids = torch.tensor([[1, 5, 9, 33, 60]])
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        got = loaded.model(ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_stored_copy_equal_to_its_source_stays_tied(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    cfg = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )
    write_hf_checkpoint(cfg, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_full(tmp_path, tokenizer=False)
    assert loaded.extras["notes"] == [] and loaded.config.tie_word_embeddings is True
