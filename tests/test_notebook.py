"""examples/chapter5.ipynb runs headless from top to bottom, and its plots are kept as artifacts.

The notebook is executed with nbclient on an ipykernel that runs this very
interpreter (a kernelspec written into a temporary JUPYTER_PATH), in a scratch
folder, single-threaded. Any cell that raises fails the test. The PNGs of the
cells tagged ``artifact:NAME`` (the loss curve and the comparison figure) and
the executed notebook are saved under ``$PORTAGPT_ARTIFACTS`` (default
``tests/artifacts/``, ignored by git).
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

import portagpt

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "chapter5.ipynb"
KERNEL = "portagpt-test-python"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def artifacts_dir() -> Path:
    return Path(os.environ.get("PORTAGPT_ARTIFACTS") or ROOT / "tests" / "artifacts")


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec whose argv is this interpreter, found first through JUPYTER_PATH."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter"
    install(kernel_name=KERNEL, prefix=str(prefix), display_name="portagpt tests")
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    src = str(Path(portagpt.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # tiny models: threads only contend
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("PORTAGPT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks the inline backend
    return KERNEL


def saved_plots(nb: object, out: Path) -> dict[str, Path]:
    """Write each ``artifact:NAME`` cell's PNG output to ``out/NAME.png``."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for cell in nb.cells:  # type: ignore[attr-defined]
        tags = cell.metadata.get("tags", [])
        names = [t.split(":", 1)[1] for t in tags if t.startswith("artifact:")]
        outputs = [o.get("data", {}) for o in cell.get("outputs", [])]
        pngs = [data["image/png"] for data in outputs if "image/png" in data]
        for name, png in zip(names, pngs, strict=False):
            path = out / f"{name}.png"
            path.write_bytes(base64.b64decode(png))
            written[name] = path
    return written


def test_chapter5_notebook_runs_and_renders_its_plots(tmp_path: Path, kernel_env: str) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel_env,
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,  # a cell that raises fails the test (CellExecutionError)
    )
    client.execute()  # starts the kernel, runs every cell, shuts the kernel down

    out = artifacts_dir()
    written = saved_plots(nb, out)
    nbformat.write(nb, out / "chapter5.executed.ipynb")
    print(f"notebook artifacts: {out}", file=sys.stderr)
    assert set(written) == {"loss-curve", "comparison"}
    for path in written.values():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, path

    text = "\n".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name")
    )
    assert "\r" not in text  # no progress-bar frames in the notebook's stream output
    assert (tmp_path / "runs" / "chapter5-gpt2" / "checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "chapter5-compare" / "compare.json").is_file()
