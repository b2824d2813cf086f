"""The chapter-5 trainer: loss, evaluation cadence, tokens seen, accumulation, schedule, files."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from portagpt.core.data import TokenWindowDataset, make_loader
from portagpt.core.train import (
    Callback,
    TrainConfig,
    Trainer,
    calc_loss_batch,
    calc_loss_loader,
    flat,
    greedy_sample,
    lr_factor,
    param_groups,
    perplexity,
)
from portagpt.errors import UsageError
from portagpt.registry import get_family


class ByteTokenizer:
    vocab_size = 256
    eos_token_id = None
    pad_token_id = None
    stop_token_ids = ()
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0, **changes) -> nn.Module:
    family = get_family("gpt2")
    torch.manual_seed(seed)
    model = family.build_model(
        replace(family.smoke_config, **changes)
    )  # vocab 256, 2 layers, 32 wide
    model.init_weights()
    return model


def loaders(n_train: int = 170, n_val: int = 40, ctx: int = 16, batch: int = 2, seed: int = 1):
    ids = (
        torch.arange(n_train + n_val) * 7 + (torch.arange(n_train + n_val) // 5)
    ) % 256  # learnable
    train = TokenWindowDataset(ids[:n_train], ctx, ctx)  # 170 tokens -> 10 windows -> 5 batches
    val = TokenWindowDataset(ids[n_train:], ctx, ctx)
    return (
        make_loader(train, batch, shuffle=True, drop_last=True, seed=seed),
        make_loader(val, batch, shuffle=False, drop_last=False),
    )


def quiet(**kw) -> TrainConfig:
    return TrainConfig(**{"sample_tokens": 0, **kw})


def test_loss_is_mean_token_cross_entropy_and_perplexity_its_exp() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (3, 10))
    y = torch.randint(0, 256, (3, 10))
    logp = torch.log_softmax(model(x), dim=-1)  # (B, T, V)
    by_hand = -logp.gather(-1, y[..., None]).mean()
    torch.testing.assert_close(calc_loss_batch(model, x, y), by_hand)
    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert perplexity(1e4) == float("inf")


def test_loss_loader_averages_the_first_n_batches() -> None:
    model = tiny_model()
    train, _ = loaders()
    ordered = make_loader(train.dataset, 2, shuffle=False, drop_last=True)
    per_batch = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in ordered]
    assert calc_loss_loader(ordered, model, "cpu", 3) == pytest.approx(sum(per_batch[:3]) / 3)
    assert calc_loss_loader(ordered, model, "cpu", 99) == pytest.approx(
        sum(per_batch) / len(per_batch)
    )
    empty = make_loader(TokenWindowDataset(list(range(5)), 8, 8), 2, shuffle=False, drop_last=False)
    assert math.isnan(calc_loss_loader(empty, model, "cpu"))


def test_eval_cadence_counts_steps_from_zero_and_tokens_seen() -> None:
    train, val = loaders()  # 5 batches of 2 x 16 tokens per epoch
    history = Trainer(
        tiny_model(), train, val, quiet(epochs=2, eval_freq=3, eval_iter=2), progress=False
    ).fit()
    assert [e.step for e in history.evals] == [0, 3, 6, 9]
    assert [e.epoch for e in history.evals] == [1, 1, 2, 2]
    assert [e.tokens_seen for e in history.evals] == [(s + 1) * 32 for s in (0, 3, 6, 9)]
    assert len(history.step_losses) == 10
    assert history.tokens_per_epoch == 5 * 32
    for e in history.evals:
        assert e.train_ppl == pytest.approx(math.exp(e.train_loss))


def test_evaluation_runs_in_eval_mode_without_gradients() -> None:
    seen = []

    class Spy(Callback):
        def on_evaluate(self, trainer, record):
            seen.append(trainer.model.training)

    model = tiny_model(drop_rate=0.5)
    train, val = loaders()
    trainer = Trainer(
        model, train, val, quiet(epochs=1, eval_freq=100), callbacks=[Spy()], progress=False
    )
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append((m.training, torch.is_grad_enabled())))
    trainer.fit()
    evals = [c for c in calls if not c[0]]
    assert evals and all(not grad for _, grad in evals)  # eval forwards had no autograd
    assert all(grad for training, grad in calls if training)
    assert model.training  # back to train mode afterwards
    assert seen == [True, True]  # step 0 and the final evaluation, each after restoring train mode


def test_gradient_accumulation_groups_batches_per_step() -> None:
    train, val = loaders()  # 5 batches -> steps of 2, 2, 1 batches
    history = Trainer(
        tiny_model(), train, val, quiet(epochs=2, grad_accum=2, eval_freq=2), progress=False
    ).fit()
    assert [e.step for e in history.evals] == [0, 2, 4, 5]  # the last step is evaluated too
    batches_done = [2, 4, 5, 7, 9, 10]
    assert [e.tokens_seen for e in history.evals] == [batches_done[s] * 32 for s in (0, 2, 4, 5)]


def test_accumulating_two_half_batches_equals_one_full_batch() -> None:
    a, b = tiny_model(), tiny_model()
    train1, val = loaders(batch=1)
    train2, _ = loaders(batch=2)
    cfg = quiet(epochs=1, eval_freq=100, eval_iter=1)
    t1 = Trainer(a, train1, val, replace(cfg, grad_accum=2), progress=False)
    t2 = Trainer(b, train2, val, cfg, progress=False)
    t1.train_step(_first_n(train1, 2))  # the same two windows, one per micro-batch
    t2.train_step(_first_n(train2, 1))
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def _first_n(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_warmup_then_cosine_schedule() -> None:
    f = [lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(x < y for x, y in zip(f[:9], f[1:10], strict=True))  # warmup rises
    assert all(x >= y for x, y in zip(f[10:-1], f[11:], strict=True))  # then decays
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, 0, "constant", 0.1) == 1.0


def test_scheduler_drives_optimizer_lr() -> None:
    train, val = loaders()
    cfg = quiet(epochs=2, lr=1e-3, warmup_steps=3, schedule="cosine", eval_freq=1)
    history = Trainer(tiny_model(), train, val, cfg, progress=False).fit()
    lrs = [e.lr for e in history.evals]  # lr after each step
    expected = [1e-3 * lr_factor(s + 1, 10, 3, "cosine", 0.1) for s in range(10)]
    assert lrs == pytest.approx(expected)


def test_decay_filter_matrices_skips_norms_biases_and_embeddings() -> None:
    model = tiny_model(tie_word_embeddings=True)
    decay, keep = param_groups(model, 0.1, "matrices")
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"])
    assert "tok_emb.weight" in {names[id(p)] for p in keep["params"]}
    assert keep["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    (everything,) = param_groups(model, 0.1, "all")
    assert len(everything["params"]) == len(list(model.parameters()))


def test_training_lowers_the_loss_and_is_reproducible() -> None:
    def run():
        train, val = loaders()
        cfg = quiet(epochs=6, lr=5e-3, eval_freq=10)
        return Trainer(tiny_model(), train, val, cfg, progress=False).fit()

    h1, h2 = run(), run()
    assert h1.evals[-1].train_loss < h1.evals[0].train_loss - 1.0
    assert h1.step_losses == h2.step_losses


def test_run_folder_gets_plot_metrics_and_samples(tmp_path) -> None:
    train, val = loaders()
    cfg = TrainConfig(epochs=2, eval_freq=4, sample_prompt="ab", sample_tokens=5)
    history = Trainer(
        tiny_model(), train, val, cfg, tokenizer=ByteTokenizer(), out_dir=tmp_path, progress=False
    ).fit()
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "loss.pdf").read_bytes()[:5] == b"%PDF-"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [e.step for e in history.evals]
    assert [r["val_loss"] for r in evals] == [e.val_loss for e in history.evals]
    assert [r["loss"] for r in records if r["type"] == "train"] == history.step_losses
    assert len(history.samples) == 2 and all(s.startswith("ab") for s in history.samples)
    assert (tmp_path / "samples.txt").read_text().splitlines()[
        1
    ] == f"Epoch 2: {flat(history.samples[1])}"
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


def test_only_the_main_process_writes(tmp_path) -> None:
    train, val = loaders()
    Trainer(
        tiny_model(),
        train,
        val,
        quiet(epochs=1),
        out_dir=tmp_path,
        is_main_process=False,
        progress=False,
    ).fit()
    assert list(tmp_path.iterdir()) == []


def test_sample_without_family_contract_uses_plain_greedy_loop() -> None:
    class Bigram(nn.Module):  # any (B, T) -> (B, T, V) module
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Embedding(256, 256)
            with torch.no_grad():
                self.table.weight.zero_()
                self.table.weight[torch.arange(256), (torch.arange(256) + 1) % 256] = 1.0

        def forward(self, ids):
            return self.table(ids)

    assert greedy_sample(Bigram(), ByteTokenizer(), "a", 3) == "abcd"


def test_stop_request_ends_the_run_after_the_step() -> None:
    class StopAt(Callback):
        def on_step_end(self, trainer, loss):
            if trainer.global_step == 2:
                trainer.should_stop = True

    train, val = loaders()
    trainer = Trainer(
        tiny_model(), train, val, quiet(epochs=3), callbacks=[StopAt()], progress=False
    )
    history = trainer.fit()
    assert len(history.step_losses) == 3 and trainer.batch_in_epoch == 3


@pytest.mark.parametrize(
    "field,value,flag",
    [("epochs", 0, "--epochs"), ("lr", -1e-3, "--lr"), ("lr", 0.0, "--lr"), ("grad_accum", 0, "--grad-accum"),
     ("eval_freq", 0, "--eval-freq"), ("grad_clip", -1.0, "--clip"), ("dtype", "float16", "--dtype")],
)  # fmt: skip
def test_bad_config_raises_usage_error_naming_the_flag(field, value, flag) -> None:
    train, val = loaders()
    with pytest.raises(UsageError, match=flag):
        Trainer(tiny_model(), train, val, quiet(**{field: value}), progress=False)


def test_bfloat16_autocast_trains_with_float32_weights() -> None:
    train, val = loaders()
    model = tiny_model()
    history = Trainer(model, train, val, quiet(epochs=1, dtype="bfloat16"), progress=False).fit()
    assert all(math.isfinite(x) for x in history.step_losses)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32 = Trainer(tiny_model(), *loaders(), quiet(epochs=1), progress=False).fit()
    assert history.step_losses[0] == pytest.approx(fp32.step_losses[0], abs=0.05)  # same model
    assert history.step_losses != fp32.step_losses  # but computed in bf16
