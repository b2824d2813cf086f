"""What a finished training run hands back: :class:`Run` (history, files, model, plot).

Returned by :func:`portagpt.core.run.execute` (and so by ``portagpt.train``);
``portagpt train --json`` prints :meth:`Run.to_dict`. The history is the
trainer's :class:`~portagpt.core.train.TrainHistory`: every evaluation
(train/val loss and tokens seen), every optimizer step's loss, every sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays unimported until a run is made (`portagpt --help` is fast)
    from .train import TrainHistory


@dataclass
class Run:
    """One training run: where it wrote, what it learned, and the trained model."""

    out: Path
    family: str
    history: TrainHistory = field(repr=False)
    tokens_seen: int
    seconds: float
    parameters: int
    run_info: dict[str, Any] = field(default_factory=dict, repr=False)
    is_main: bool = True  # False on the other ranks of a torchrun launch
    model: Any = field(default=None, repr=False, compare=False)
    tokenizer: Any = field(default=None, repr=False, compare=False)

    @property
    def checkpoint(self) -> Path:
        """The checkpoint folder (``portagpt.load`` / ``--resume`` read it)."""
        from .run_folder import CHECKPOINT_DIR

        return self.out / CHECKPOINT_DIR

    @property
    def metrics(self) -> Path:
        from .train import METRICS_FILE

        return self.out / METRICS_FILE

    @property
    def plot_paths(self) -> list[Path]:
        from .train import PLOT_STEM

        return [(self.out / PLOT_STEM).with_suffix(s) for s in (".png", ".pdf")]

    @property
    def train_losses(self) -> list[float]:
        return self.history.train_losses

    @property
    def val_losses(self) -> list[float]:
        return self.history.val_losses

    @property
    def tokens(self) -> list[int]:
        """Tokens seen at each evaluation (the x axis of the loss plot)."""
        return self.history.tokens_seen

    @property
    def samples(self) -> list[str]:
        return self.history.samples

    def plot(self, title: str | None = None) -> Any:
        """The loss curve (train and validation against tokens seen) as a matplotlib Figure."""
        from .plots import loss_figure

        h = self.history
        return loss_figure(h.tokens_seen, h.train_losses, h.val_losses, h.tokens_per_epoch, title)

    def summary(self) -> str:
        """The closing lines ``portagpt train`` prints."""
        first, last = self.history.evals[0], self.history.evals[-1]
        return (
            f"Done in {self.seconds:.0f} s ({self.tokens_seen:,} tokens seen). Train loss "
            f"{first.train_loss:.3f} -> {last.train_loss:.3f}, val loss {first.val_loss:.3f} -> "
            f"{last.val_loss:.3f} (perplexity {last.val_ppl:.1f}).\nWrote {self.out}/: loss.png, "
            "loss.pdf, metrics.jsonl, samples.txt, run.json, checkpoint/"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: what ``portagpt train --json`` prints as its last line."""
        return {
            "out": str(self.out),
            "checkpoint": str(self.checkpoint),
            "family": self.family,
            "parameters": self.parameters,
            "tokens_seen": self.tokens_seen,
            "seconds": round(self.seconds, 3),
            "evals": [e.to_json() for e in self.history.evals],
            "step_losses": list(self.history.step_losses),
            "samples": list(self.history.samples),
            "tokens_per_epoch": self.history.tokens_per_epoch,
            "run": self.run_info,
        }

    def _repr_html_(self) -> str:  # Jupyter: a short table instead of the dataclass repr
        last = self.history.evals[-1] if self.history.evals else None
        loss = f"{last.train_loss:.3f} / {last.val_loss:.3f}" if last else "-"
        return (
            f"<b>Run</b> {self.family}, {self.parameters / 1e6:.1f}M parameters, "
            f"{self.tokens_seen:,} tokens seen in {self.seconds:.0f} s; train / val loss {loss}; "
            f"checkpoint <code>{self.checkpoint}</code>"
        )
