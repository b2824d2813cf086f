"""Multi-process training: torchrun with 2 gloo processes matches 1 process with the same global batch.

The launched runs use the real ``tiny`` Llama preset (the subprocesses cannot
see presets a test registers) with 32-token windows on 3,000 characters, so
each launch takes seconds. The single-process reference runs in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from portagpt.cli import main
from portagpt.core.distributed import (
    LaunchInfo,
    checkpoint_blocks,
    find_blocks,
    launch_info,
    resolve_backend,
    train_loader,
)
from portagpt.errors import UsageError

pytestmark = pytest.mark.distributed

COMMON = ["--family", "llama", "--preset", "tiny", "--context-length", "32", "--epochs", "2"]
COMMON += ["--eval-freq", "3", "--eval-iter", "2", "--sample-tokens", "3", "--no-progress"]
COMMON += ["--lr", "1e-3", "--warmup", "2"]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    verdict = resources.files("portagpt").joinpath("data", "the-verdict.txt").read_text("utf-8")
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(verdict[:3000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, text) -> Path:
    """One process, batch 4: the reference for 2 processes x batch 2."""
    out = tmp_path_factory.mktemp("single") / "run"
    assert (
        main(["train", *COMMON, "--data", str(text), "--out", str(out), "--batch-size", "4"]) == 0
    )
    return out


def torchrun(out: Path, text: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PORTAGPT_DISABLE_PLUGIN_AUTOLOAD="1")
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "portagpt", "train", *COMMON, "--data", str(text), "--out", str(out)]
    cmd += ["--batch-size", "2", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def metrics(out: Path) -> tuple[list[float], list[tuple[float, float]]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["loss"] for r in rows if r["type"] == "train"]
    evals = [(r["train_loss"], r["val_loss"]) for r in rows if r["type"] == "eval"]
    return steps, evals


def assert_same_run(a: Path, b: Path) -> None:
    (steps_a, evals_a), (steps_b, evals_b) = metrics(a), metrics(b)
    assert len(steps_a) == len(steps_b) == 10  # 2 epochs x 5 global batches of 4 windows
    assert steps_a == pytest.approx(steps_b, rel=1e-5)
    assert len(evals_a) == len(evals_b)
    for (ta, va), (tb, vb) in zip(evals_a, evals_b, strict=True):
        assert ta == pytest.approx(tb, rel=1e-5) and va == pytest.approx(vb, rel=1e-5)
    wa = load_file(str(a / "checkpoint" / "model.safetensors"))
    wb = load_file(str(b / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:  # Adam magnifies rounding on rows whose gradients are ~0: compare norms
        diff = (wa[name] - wb[name]).norm().item()
        assert diff <= 1e-5 * wb[name].norm().item() + 1e-7, (name, diff)


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(
    tmp_path, text, single
) -> None:
    out = tmp_path / "ddp"
    proc = torchrun(out, text)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Done in") == 1  # rank 0 alone reports
    assert "2 processes (DDP, gloo)" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["parallel"] == "ddp" and run["world_size"] == 2 and run["global_batch"] == 4
    assert_same_run(out, single)


def test_two_process_fsdp2_with_activation_checkpointing_matches_too(
    tmp_path, text, single
) -> None:
    out = tmp_path / "fsdp"
    proc = torchrun(out, text, "--fsdp", "--activation-checkpointing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (FSDP2, gloo)" in proc.stdout
    assert_same_run(out, single)  # gathered full weights, written by rank 0 in the usual format


# ---- in-process pieces ---------------------------------------------------------------------


def test_process_shards_of_each_step_make_up_the_single_process_batch() -> None:
    data = TensorDataset(torch.arange(23))  # 23 windows: 5 global batches of 4, 3 dropped
    for epoch in range(3):
        one = train_loader(data, 4, seed=7)
        one.sampler.set_epoch(epoch)
        shards = [train_loader(data, 2, seed=7, info=LaunchInfo(r, r, 2)) for r in range(2)]
        for s in shards:
            s.sampler.set_epoch(epoch)
        steps = list(zip(*shards, strict=True))
        singles = list(one)
        assert len(steps) == len(singles) == 5
        for (a,), (b,), (c,) in ((s[0], s[1], t) for s, t in zip(steps, singles, strict=True)):
            assert sorted(torch.cat([a, b]).tolist()) == sorted(c.tolist())
    order = torch.cat([x for (x,) in one]).tolist()
    assert order != sorted(order)  # shuffled


def test_backend_choice_and_refusals() -> None:
    assert resolve_backend(None, torch.device("cpu")) == "gloo"
    assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    with pytest.raises(UsageError, match="not a torch.distributed backend"):
        resolve_backend("smoke-signals", torch.device("cpu"))
    with pytest.raises(UsageError, match="needs CUDA devices"):
        resolve_backend("nccl", torch.device("cpu"))


def test_launch_info_reads_torchrun_variables() -> None:
    info = launch_info({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (1, 2, False, True)
    assert launch_info({}) == LaunchInfo()
    with pytest.raises(UsageError, match="RANK 3"):
        launch_info({"RANK": "3", "WORLD_SIZE": "2"})


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])  # a smaller list inside
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + torch.tanh(self.pair[1](torch.relu(self.pair[0](x))))


class Stack(nn.Module):
    """Blocks holding their own ModuleLists: the outer stack must be the one found."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.layers = nn.ModuleList(Block() for _ in range(3))
        self.head = nn.Linear(8, 11)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def test_block_finder_takes_the_outermost_stack_without_naming_a_family() -> None:
    model = Stack()
    assert find_blocks(model) is model.layers
    with pytest.raises(UsageError, match="ModuleList"):
        find_blocks(nn.Linear(2, 2))


def test_activation_checkpointing_recomputes_blocks_with_the_same_gradients_and_names() -> None:
    torch.manual_seed(0)
    plain, wrapped = Stack(), Stack()
    wrapped.load_state_dict(plain.state_dict())
    assert checkpoint_blocks(wrapped) == 3
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    ids = torch.randint(0, 11, (2, 5))

    def grads(model: nn.Module) -> list[torch.Tensor]:
        model(ids).pow(2).mean().backward()
        return [p.grad for p in model.parameters()]

    for a, b in zip(grads(plain), grads(wrapped), strict=True):
        torch.testing.assert_close(a, b)
    assert [b.calls for b in plain.layers] == [1, 1, 1]
    assert [b.calls for b in wrapped.layers] == [2, 2, 2]  # forward, then again in backward
    with torch.no_grad():
        wrapped(ids)  # evaluation: no recomputation machinery
    assert [b.calls for b in wrapped.layers] == [3, 3, 3]


def test_every_expert_gets_a_gradient_while_training_as_ddp_and_fsdp_need() -> None:
    from portagpt.core.layers import MoE

    torch.manual_seed(0)
    moe = MoE(dim=8, hidden=16, n_experts=8, top_k=1)
    x = torch.randn(1, 1, 8)  # one token: one expert routed, seven idle
    out = moe(x)
    out.sum().backward()
    grads = [p.grad for e in moe.experts for p in e.parameters()]
    assert all(g is not None for g in grads)
    assert sum(bool(g.abs().sum() > 0) for g in grads) == 3  # the routed expert's 3 matrices
    moe.eval()
    with torch.no_grad():
        torch.testing.assert_close(moe(x), out.detach())  # same output on the inference path
