"""Training on several processes (DDP or FSDP2 over torch.distributed), and the model wrappers.

``torchrun --nproc-per-node N -m portagpt train ...`` starts N copies of the
trainer; torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` variables tell each
one who it is (:func:`launch_info`). This module supplies what changes
between one process and several:

* :func:`resolve_backend` -- ``nccl`` for CUDA devices, ``gloo`` otherwise, or
  the one forced with ``--backend``; anything torch cannot run here (an
  unknown name, ``nccl`` without CUDA) is a :class:`~portagpt.errors.UsageError`
  raised before the process group exists;
* :func:`train_loader` -- every run, single-process ones included, draws its
  training order from a :class:`~torch.utils.data.DistributedSampler` seeded
  with ``seed`` (one permutation per epoch: ``seed + epoch``). Process ``r`` of
  ``W`` with batch ``b`` takes positions ``r, r + W, ...`` of the permutation,
  so optimizer step ``k`` sees positions ``[k W b, (k + 1) W b)`` on the
  processes together -- exactly the batch one process with batch ``W b`` takes
  at step ``k``. As DDP averages the gradients of equal-sized shards, 2
  processes x batch b train the same weights as 1 process x batch 2b (to float
  rounding; models without dropout, whose masks are drawn per process);
* :class:`DistributedTrainer` -- the :class:`~portagpt.core.train.Trainer`
  with DDP's ``no_sync`` between accumulation micro-batches, step losses and
  evaluation losses averaged over processes (evaluation splits each global
  batch's rows across the processes and sums token losses, so the numbers are
  those of one process), a barrier after every checkpoint, and, for FSDP2,
  full (gathered) state dicts written by rank 0 in the ordinary checkpoint
  format;
* wrappers applied to a model before the trainer gets it: :func:`shard_fsdp`
  (``fully_shard`` on every block, then the root), :func:`checkpoint_blocks`
  (activation checkpointing, one ``torch.utils.checkpoint`` per block) and
  :func:`compile_model`. Blocks are found without naming a family: the
  :class:`~torch.nn.ModuleList` holding the most parameters (:func:`find_blocks`).

Only rank 0 prints, draws the progress bar, samples, plots and writes files
(the trainer's ``is_main_process``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import CheckpointError, UsageError
from .train import Trainer

BACKENDS = ("gloo", "nccl", "mpi")
AUTO = "auto"


# ---- who am I ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchInfo:
    """This process's place in the job (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_info(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Rank, local rank and world size from torchrun's environment variables."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets them); found "
            f"{env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}, {env.get('LOCAL_RANK')!r}. Launch "
            "with torchrun --nproc-per-node N -m portagpt train ..., or unset them."
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(
            f"RANK {rank} does not fit WORLD_SIZE {world}; launch with torchrun, which sets both."
        )
    return LaunchInfo(rank, local, world)


def resolve_backend(requested: str | None, device: torch.device) -> str:
    """The process-group backend for ``device``: ``nccl`` on CUDA, ``gloo`` otherwise, or ``requested``."""
    import torch.distributed as dist

    name = (requested or AUTO).lower()
    if name != AUTO and name not in BACKENDS:
        raise UsageError(
            f"--backend {requested!r} is not a torch.distributed backend portagpt knows. Use "
            f"{', '.join((AUTO, *BACKENDS))} ('auto': nccl on CUDA devices, gloo on CPU)."
        )
    if not dist.is_available():
        raise UsageError(
            "This torch build has no torch.distributed support, so multi-process training cannot "
            "run; install a torch build with distributed support, or train in one process."
        )
    if name == AUTO:
        name = "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and device.type != "cuda":
        raise UsageError(
            f"--backend nccl needs CUDA devices, but this run trains on {device.type!r} "
            f"(--device; CUDA available: {torch.cuda.is_available()}). Use --backend gloo (or auto) "
            "for CPU training."
        )
    if not dist.is_backend_available(name):
        raise UsageError(
            f"--backend {name} is not available in this torch build (torch {torch.__version__}). "
            "Use --backend gloo on CPU, nccl on NVIDIA GPUs, or auto."
        )
    return name


def device_for(device: torch.device, info: LaunchInfo) -> torch.device:
    """One CUDA device per local rank (``cuda`` -> ``cuda:LOCAL_RANK``); other devices as given."""
    if device.type == "cuda" and info.distributed and device.index is None:
        if info.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"Local rank {info.local_rank} has no CUDA device of its own (this machine has "
                f"{torch.cuda.device_count()}); start at most that many processes per node."
            )
        return torch.device("cuda", info.local_rank)
    return device


def init_process_group(info: LaunchInfo, backend: str, device: torch.device) -> None:
    """Join the job's process group (torchrun's rendezvous variables say where)."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, **kwargs)


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (a no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---- data order ----------------------------------------------------------------------------


def train_loader(
    dataset: Dataset, batch_size: int, seed: int, info: LaunchInfo = LaunchInfo()
) -> DataLoader:
    """This process's training loader: its shard of the epoch's seeded permutation, full batches.

    The sampler drops the tail that does not divide among the processes and
    the loader drops an incomplete last batch, so every process takes the same
    number of equal batches, ``len(dataset) // (W * batch_size)`` per epoch.
    """
    sampler = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


def eval_loader(dataset: Dataset, global_batch: int) -> DataLoader:
    """An evaluation loader of whole global batches, in order (each process takes its rows)."""
    return DataLoader(dataset, batch_size=global_batch, shuffle=False, drop_last=False)


# ---- model wrappers ------------------------------------------------------------------------


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of blocks: the ModuleList holding the most parameters.

    Lists nested in a block (experts, heads) hold a share of it, so the
    outermost stack wins; no family is named.
    """
    from .checkpoint import unwrap_model

    best: tuple[int, nn.ModuleList] | None = None
    for module in unwrap_model(model).modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, module)
    if best is None or best[0] == 0:
        raise UsageError(
            f"{type(unwrap_model(model)).__name__} has no nn.ModuleList of blocks, so "
            "--activation-checkpointing and --fsdp have nothing to wrap; build the model's layers "
            "as an nn.ModuleList (as every portagpt family does), or leave those flags out."
        )
    return best[1]


def checkpoint_blocks(model: nn.Module) -> int:
    """Recompute each block's activations in backward instead of storing them; returns the count.

    Each block's ``forward`` is replaced, on the instance, by one that runs the
    original under ``torch.utils.checkpoint`` (non-reentrant, RNG state
    preserved) while training with gradients, and directly otherwise (evaluation,
    generation with a KV cache). Parameter names do not change, so checkpoints
    are unaffected.
    """
    from torch.utils.checkpoint import checkpoint

    blocks = find_blocks(model)
    for block in blocks:
        if getattr(block, "_portagpt_checkpointed", False):
            continue
        original = block.forward

        def forward(
            *args: Any, _orig: Any = original, _block: nn.Module = block, **kwargs: Any
        ) -> Any:
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_orig, *args, use_reentrant=False, **kwargs)
            return _orig(*args, **kwargs)

        block.forward = functools.wraps(original)(forward)  # type: ignore[method-assign]
        block._portagpt_checkpointed = True  # type: ignore[assignment]
    return len(blocks)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` (buffers are constants here: no re-broadcasting).

    Every parameter must get a gradient in every step, on every process (the
    shared mixture of experts runs each expert while training, on no tokens if
    none were routed to it), so DDP need not search for unused parameters.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    params = inspect.signature(DistributedDataParallel).parameters
    # torch >= 2.13 spells "do not sync buffers before each forward" forward_sync_buffers
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=ids, **{key: False})


def shard_fsdp(model: nn.Module) -> nn.Module:
    """FSDP2: ``fully_shard`` every block, then the root (embeddings, final norm, head).

    Each process then holds ``1 / world_size`` of every parameter and of the
    optimizer state; a block's weights are gathered just for its forward and
    backward. Call after :func:`checkpoint_blocks` and before building the optimizer.
    """
    from torch.distributed.fsdp import fully_shard

    for block in find_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model, backend=backend)``; checkpoints still get the plain names."""
    try:
        return torch.compile(model, backend=backend)
    except Exception as exc:  # an unknown backend, or no compiler toolchain on this machine
        raise UsageError(
            f"torch.compile cannot use backend {backend!r} here ({type(exc).__name__}: {exc}). "
            "Use --compile (inductor, needs a C++ compiler on CPU), --compile aot_eager, or leave "
            "--compile out."
        ) from None


# ---- the trainer on several processes ---------------------------------------------------------


class DistributedTrainer(Trainer):
    """:class:`Trainer` for one process of a DDP or FSDP2 job (see the module docstring).

    ``model`` is the wrapped model (DDP module, or the ``fully_shard``-ed one;
    possibly compiled); ``ddp`` the DistributedDataParallel object when there is
    one (for ``no_sync``); ``fsdp`` whether parameters are sharded.
    """

    def __init__(
        self,
        *args: Any,
        info: LaunchInfo,
        ddp: nn.Module | None = None,
        fsdp: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("is_main_process", info.is_main)
        kwargs.setdefault("world_size", info.world_size)
        super().__init__(*args, **kwargs)
        self.info = info
        self.ddp = ddp
        self.fsdp = fsdp
        self._gathered: tuple[dict[str, Any], dict[str, Any]] | None = None

    # ---- collectives ----------------------------------------------------------------------
    def _all_reduce_sum(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        if dist.is_initialized():
            dist.all_reduce(t)
        return t.tolist()

    def _collective_device(self) -> torch.device:
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")

    def sync_context(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        if self.ddp is not None and not last_micro_batch:
            return self.ddp.no_sync()
        return contextlib.nullcontext()

    def reduce_mean(self, value: float) -> float:
        return self._all_reduce_sum([value])[0] / self.info.world_size

    def train_step(self, batches: Any) -> float:
        return self.reduce_mean(super().train_step(batches))

    # ---- evaluation: each global batch's rows split across the processes -------------------------
    def _eval_model(self) -> nn.Module:
        from .checkpoint import unwrap_model

        # DDP's forward would synchronise; its module holds the same weights. FSDP must gather.
        return self.model if self.fsdp else unwrap_model(self.model)

    def loader_loss(self, loader: DataLoader) -> float:
        n = min(self.config.eval_iter, len(loader))
        if n == 0:
            return float("nan")
        model, rank, world = self._eval_model(), self.info.rank, self.info.world_size
        total = 0.0
        for i, (inputs, targets) in enumerate(loader):
            if i >= n:
                break
            rows = inputs[rank::world].to(self.device), targets[rank::world].to(self.device)
            if len(rows[0]) == 0:  # fewer rows than processes: FSDP still needs every forward
                logits = model(inputs[:1].to(self.device))
                local = float(logits.sum().float().item()) * 0.0
            else:
                logits = model(rows[0])  # (b, T, vocab)
                local = F.cross_entropy(
                    logits.flatten(0, 1).float(), rows[1].flatten(), reduction="sum"
                ).item()
            loss_sum, count = self._all_reduce_sum([local, float(rows[1].numel())])
            total += loss_sum / count
        return total / n

    def sample(self) -> str | None:
        if not self.fsdp:
            return super().sample()
        # sharded weights: every process must run the same forwards; rank 0 keeps the text
        main, self.is_main_process = self.is_main_process, True
        try:
            text = super().sample()
        finally:
            self.is_main_process = main
        return text if main else None

    # ---- checkpoints: rank 0 writes, everyone waits ----------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor] | None:
        return self._gathered[0] if self._gathered is not None else None

    def optimizer_state(self) -> dict[str, Any]:
        if self._gathered is not None:
            return self._gathered[1]
        return super().optimizer_state()

    def save_checkpoint(self, folder: str | Path | None = None) -> Path | None:
        if folder is None and self.out_dir is None:
            return None
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            self._gathered = (
                get_model_state_dict(self.model, options=opts),
                get_optimizer_state_dict(self.model, self.optimizer, options=opts),
            )
        try:
            path = super().save_checkpoint(folder)
        finally:
            self._gathered = None
        barrier()  # nobody reads or overwrites it before it is complete
        return path

    def load_weights(self, folder: str | Path) -> None:
        if not self.fsdp:
            return super().load_weights(folder)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(
            self.model, full_weights(folder), options=StateDictOptions(full_state_dict=True)
        )

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        if not self.fsdp:
            return super().load_optimizer_state(state)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True)
        )


def full_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint under every name the model has (stored-once ties expanded)."""
    import json

    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from .checkpoint import WEIGHTS_FILE, resolve_checkpoint

    path = resolve_checkpoint(folder) / WEIGHTS_FILE
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            tied = json.loads((f.metadata() or {}).get("portagpt_tied", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({exc}); resume from another "
            "checkpoint, or train afresh."
        ) from None
    for alias, source in tied.items():
        tensors[alias] = tensors[source]
    return tensors
