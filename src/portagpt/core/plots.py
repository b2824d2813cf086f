"""The chapter-5 loss plot: train and validation loss against tokens seen, epochs on top.

Drawn with matplotlib's Agg backend (no display needed) and saved as both PNG
and PDF. The epoch axis is a secondary x axis derived from tokens seen
(``epoch = tokens / tokens_per_epoch``), so the two scales always line up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_losses(
    tokens_seen: Sequence[float],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    tokens_per_epoch: float,
    out_stem: str | Path,
    title: str | None = None,
) -> list[Path]:
    """Write ``<out_stem>.png`` and ``<out_stem>.pdf``; returns both paths."""
    fig = loss_figure(tokens_seen, train_losses, val_losses, tokens_per_epoch, title)
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path)
    return paths


def loss_figure(
    tokens_seen: Sequence[float],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    tokens_per_epoch: float,
    title: str | None = None,
) -> Figure:
    """The loss curve as a matplotlib Figure (Jupyter shows it as the value of a cell)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5, 3))  # no pyplot: no global backend switch, no GUI
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(tokens_seen, train_losses, label="Training loss")
    ax.plot(tokens_seen, val_losses, linestyle="-.", label="Validation loss")
    ax.set_xlabel("Tokens seen")
    ax.set_ylabel("Loss")
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title, fontsize="medium")
    if tokens_per_epoch > 0:
        per = float(tokens_per_epoch)
        top = ax.secondary_xaxis("top", functions=(lambda t: t / per, lambda e: e * per))
        top.set_xlabel("Epochs")
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig
