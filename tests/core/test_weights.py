"""Weight maps are declarative, invertible, and run on meta tensors (shapes only)."""

from __future__ import annotations

import torch

from portagpt.adapters.weights import Rule, WeightMap, drop, rename, split, stack, transpose

MAP = WeightMap(
    [
        rename("model.embed.weight", "embed.weight"),
        Rule(("layers.{}.qkv.weight",), ("blocks.{}.q.weight", "blocks.{}.k.weight", "blocks.{}.v.weight"), split(3, 0, transpose())),
        Rule(("layers.{}.experts.{}.w",), ("blocks.{}.experts.{}.w",)),
        Rule(("layers.{}.e.0.w", "layers.{}.e.1.w"), ("blocks.{}.e.w",), stack()),
        drop("layers.{}.rotary.inv_freq"),
    ]
)


def _hf_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = {"model.embed.weight": torch.randn(10, 4, generator=g)}
    for i in range(2):
        s[f"layers.{i}.qkv.weight"] = torch.randn(4, 12, generator=g)
        s[f"layers.{i}.experts.{3}.w"] = torch.randn(2, 2, generator=g)
        s[f"layers.{i}.e.0.w"] = torch.randn(3, generator=g)
        s[f"layers.{i}.e.1.w"] = torch.randn(3, generator=g)
        s[f"layers.{i}.rotary.inv_freq"] = torch.randn(2, generator=g)
    return s


def test_hf_to_native_to_hf_is_the_identity_except_dropped_tensors() -> None:
    hf = _hf_state()
    native, plan = MAP.to_native(hf)
    assert not plan.unmatched and not plan.incomplete
    assert native["blocks.1.q.weight"].shape == (4, 4)
    torch.testing.assert_close(native["blocks.0.k.weight"], hf["layers.0.qkv.weight"].t()[4:8])
    assert native["blocks.1.e.w"].shape == (2, 3)
    back, _ = MAP.to_hf(native)
    expected = {k: v for k, v in hf.items() if "inv_freq" not in k}
    assert set(back) == set(expected)
    for k, v in expected.items():
        assert torch.equal(back[k], v), k


def test_maps_shapes_on_meta_tensors_without_data() -> None:
    meta = {k: torch.empty(v.shape, device="meta") for k, v in _hf_state().items()}
    native, _ = MAP.to_native(meta)
    assert all(t.is_meta for t in native.values())
    assert native["blocks.0.v.weight"].shape == (4, 4)


def test_reports_unmatched_names_and_incomplete_groups() -> None:
    hf = _hf_state()
    hf["stray.weight"] = torch.zeros(1)
    del hf["layers.1.e.1.w"]
    plan = MAP.plan_to_native(hf)
    assert plan.unmatched == ["stray.weight"]
    assert plan.incomplete == [("layers.1.e.0.w", ["layers.1.e.1.w"])]
