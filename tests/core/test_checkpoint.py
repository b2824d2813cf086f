"""Training checkpoints: round trip, tied weights, exact resume, atomic writes, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from torch import nn

from portagpt.core import checkpoint as ckpt
from portagpt.core.checkpoint import (
    config_from_dict,
    load_training_state,
    load_weights,
    read_sidecar,
    resolve_checkpoint,
    save_checkpoint,
)
from portagpt.core.data import TokenWindowDataset, make_loader
from portagpt.core.train import Callback, TrainConfig, Trainer
from portagpt.errors import CheckpointError, CheckpointNotFoundError, WeightMismatchError
from portagpt.registry import get_family

FAMILY = get_family("gpt2")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0, **changes) -> nn.Module:
    torch.manual_seed(seed)
    model = FAMILY.build_model(replace(FAMILY.smoke_config, **changes))
    model.init_weights()
    return model


def loaders(seed: int = 1):
    ids = (torch.arange(260) * 5 + torch.arange(260) // 3) % 256
    train = TokenWindowDataset(ids[:210], 16, 12)  # 17 windows -> 5 batches of 3 (drop_last)
    val = TokenWindowDataset(ids[210:], 16, 16)
    return (
        make_loader(train, 3, shuffle=True, drop_last=True, seed=seed),
        make_loader(val, 3, shuffle=False, drop_last=False),
    )


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-7, msg=k)


def test_round_trip_stores_tied_weight_once_and_reties(tmp_path) -> None:
    model = tiny_model(tie_word_embeddings=True)
    folder = save_checkpoint(tmp_path / "ck", model, family=FAMILY, meta={"step": 3})
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert "tok_emb.weight" in names and "out_head.weight" not in names
    fresh = tiny_model(seed=1, tie_word_embeddings=True)
    load_weights(folder, fresh)
    assert_same_weights(model, fresh)
    assert fresh.out_head.weight is fresh.tok_emb.weight


def test_untied_model_round_trips_every_tensor(tmp_path) -> None:
    model = tiny_model(tie_word_embeddings=False)
    save_checkpoint(tmp_path / "ck", model, family=FAMILY)
    fresh = tiny_model(seed=1, tie_word_embeddings=False)
    load_weights(tmp_path / "ck", fresh)
    assert_same_weights(model, fresh)
    assert fresh.out_head.weight.data_ptr() != fresh.tok_emb.weight.data_ptr()


def test_sidecar_and_config_json_describe_the_model(tmp_path) -> None:
    model = tiny_model()
    save_checkpoint(tmp_path / "ck", model, family=FAMILY, meta={"step": 7, "tokens_seen": 99})
    side = read_sidecar(tmp_path / "ck")
    assert side["format_version"] == ckpt.FORMAT_VERSION and side["family"] == "gpt2"
    assert side["step"] == 7 and side["tokens_seen"] == 99
    assert side["hf_config"] == FAMILY.config_to_hf(model.config)
    assert json.loads((tmp_path / "ck" / "config.json").read_text()) == FAMILY.config_to_hf(
        model.config
    )
    assert config_from_dict(FAMILY.smoke_config, side["config"]) == model.config


def test_compiled_model_saves_native_names(tmp_path) -> None:
    model = tiny_model()
    compiled = torch.compile(model)  # lazy: nothing is compiled until it runs
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_checkpoint(tmp_path / "ck", compiled, family=FAMILY)
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), framework="pt") as f:
        assert not any(k.startswith("_orig_mod.") for k in f.keys())
    fresh = tiny_model(seed=1)
    load_weights(tmp_path / "ck", torch.compile(fresh))
    assert_same_weights(model, fresh)


def test_training_state_loads_with_weights_only(tmp_path) -> None:
    train, val = loaders()
    trainer = Trainer(
        tiny_model(),
        train,
        val,
        TrainConfig(epochs=1, sample_tokens=0),
        out_dir=tmp_path,
        progress=False,
    )
    trainer.fit()
    state = torch.load(tmp_path / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 4 and state["optimizer"]["state"]


def _run(out, epochs, *, stop_after_step=None, resume=False, cfg=None):
    class Stop(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.global_step == stop_after_step:
                trainer.should_stop = True

    train, val = loaders()
    model = tiny_model(drop_rate=0.1)  # dropout: the RNG state must survive the resume too
    config = replace(cfg, epochs=epochs)
    trainer = Trainer(model, train, val, config, out_dir=out, callbacks=[Stop()], progress=False)
    history = trainer.fit(resume_from=out / "checkpoint" if resume else None)
    return model, history


RESUME_CFG = TrainConfig(
    lr=3e-3,
    schedule="cosine",
    warmup_steps=2,
    grad_clip=0.5,
    grad_accum=2,
    eval_freq=2,
    sample_tokens=0,
)


def test_one_epoch_then_resume_equals_two_epochs(tmp_path) -> None:
    cfg = replace(RESUME_CFG, schedule="constant")  # --epochs changes the cosine horizon
    straight, h_straight = _run(tmp_path / "a", 2, cfg=cfg)
    _run(tmp_path / "b", 1, cfg=cfg)
    resumed, h_resumed = _run(tmp_path / "b", 2, resume=True, cfg=cfg)
    assert h_resumed.step_losses == pytest.approx(h_straight.step_losses, rel=1e-6)
    assert [e.val_loss for e in h_resumed.evals if e.step > 2] == pytest.approx(
        [e.val_loss for e in h_straight.evals if e.step > 2], rel=1e-6
    )
    assert_same_weights(straight, resumed)


def test_resume_from_mid_epoch_stop_equals_uninterrupted_run(tmp_path) -> None:
    straight, h_straight = _run(tmp_path / "a", 3, cfg=RESUME_CFG)  # 3 steps per epoch
    _, h_stopped = _run(tmp_path / "b", 3, stop_after_step=4, cfg=RESUME_CFG)  # inside epoch 2
    assert len(h_stopped.step_losses) == 5
    resumed, h_resumed = _run(tmp_path / "b", 3, resume=True, cfg=RESUME_CFG)
    assert h_resumed.step_losses == pytest.approx(h_straight.step_losses, rel=1e-6)
    assert_same_weights(straight, resumed)


def test_crash_during_first_save_leaves_no_checkpoint(tmp_path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path / "ck", tiny_model(), family=FAMILY, training_state={"x": 1})
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    old = tiny_model(seed=0)
    save_checkpoint(tmp_path / "ck", old, family=FAMILY, meta={"step": 1}, training_state={"x": 1})
    monkeypatch.setattr(
        ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(
            tmp_path / "ck",
            tiny_model(seed=5),
            family=FAMILY,
            meta={"step": 2},
            training_state={"x": 2},
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert read_sidecar(tmp_path / "ck")["step"] == 1
    fresh = tiny_model(seed=9)
    load_weights(tmp_path / "ck", fresh)
    assert_same_weights(old, fresh)


def test_crash_between_the_two_renames_leaves_readers_the_last_checkpoint(tmp_path) -> None:
    old = tiny_model()
    save_checkpoint(tmp_path / "ck", old, family=FAMILY, meta={"step": 1})
    (tmp_path / "ck").rename(tmp_path / ".ck.old")  # the instant the old one is moved aside
    assert resolve_checkpoint(tmp_path / "ck") == tmp_path / ".ck.old"
    assert read_sidecar(tmp_path / "ck")["step"] == 1
    fresh = tiny_model(seed=3)
    load_weights(tmp_path / "ck", fresh)
    assert_same_weights(old, fresh)
    assert not (tmp_path / "ck").exists()  # readers move nothing
    save_checkpoint(tmp_path / "ck", tiny_model(seed=4), family=FAMILY, meta={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # the next save tidies up
    assert read_sidecar(tmp_path / "ck")["step"] == 2


def test_missing_folder_names_it_and_the_fix(tmp_path) -> None:
    with pytest.raises(
        CheckpointNotFoundError, match="No checkpoint folder at .*nowhere.*without --resume"
    ):
        read_sidecar(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["model.safetensors", "portagpt.json", "training_state.pt"])
def test_missing_file_names_it(tmp_path, name) -> None:
    save_checkpoint(tmp_path / "ck", tiny_model(), family=FAMILY, training_state={"x": 1})
    (tmp_path / "ck" / name).unlink()
    with pytest.raises(CheckpointError, match=f"has no {name}"):
        read_sidecar(tmp_path / "ck")
        load_weights(tmp_path / "ck", tiny_model())
        load_training_state(tmp_path / "ck")


@pytest.mark.parametrize("name", ["model.safetensors", "portagpt.json", "training_state.pt"])
def test_corrupt_file_names_it(tmp_path, name) -> None:
    save_checkpoint(
        tmp_path / "ck", tiny_model(), family=FAMILY, training_state={"x": torch.ones(3)}
    )
    path = tmp_path / "ck" / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        read_sidecar(tmp_path / "ck")
        load_weights(tmp_path / "ck", tiny_model())
        load_training_state(tmp_path / "ck")


def test_training_state_with_foreign_pickle_is_refused(tmp_path) -> None:
    save_checkpoint(tmp_path / "ck", tiny_model(), family=FAMILY, training_state={"x": 1})
    torch.save({"x": nn.Linear(2, 2)}, tmp_path / "ck" / "training_state.pt")  # not weights-only
    with pytest.raises(CheckpointError, match="training_state.pt"):
        load_training_state(tmp_path / "ck")


def test_checkpoint_of_another_size_lists_the_mismatches(tmp_path) -> None:
    save_checkpoint(tmp_path / "ck", tiny_model(), family=FAMILY)
    with pytest.raises(WeightMismatchError, match="wrong shape .*tok_emb.weight"):
        load_weights(tmp_path / "ck", tiny_model(emb_dim=64))
