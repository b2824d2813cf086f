"""Load memory and time: portagpt's meta-device path against a naive load and transformers.

Checkpoints are built locally (transformers ``from_config`` with random
weights, ``save_pretrained`` into a temporary folder; nothing is downloaded):
``gpt2``, GPT-2 small's config (124M parameters, 0.5 GB, tied head, Conv1D
weights that portagpt must transpose: the hard case); ``gemma3``, Gemma 3
270M's config (268M parameters, 1.07 GB fp32, 262,144 vocabulary, names map
one to one); ``qwen3``, a Qwen3-like 125M config (untied).

Each method then runs in its own subprocess, so its peak RSS is its own:

* ``portagpt meta``        -- ``portagpt.loaders.load_full(path)``: meta-device model,
  strict check on headers, one tensor at a time (``pread``), ``assign=True``;
* ``portagpt mmap``        -- ``loader="mmap"``: the same check, then every tensor used as
  stored is a view of the memory-mapped file (zero-copy), the transposed ones read per tensor;
* ``portagpt safetensors`` -- the same, but every file read whole first (``load_file``);
* ``naive``                -- ``loader="state_dict"``: a randomly initialised fp32 model,
  the whole state dict read with ``load_file``, ``load_state_dict`` copying into it;
* ``transformers``         -- ``AutoModelForCausalLM.from_pretrained(path, dtype=float32)``.

Measured in the child: the baseline RSS after every import (torch, safetensors,
transformers, portagpt: the same in every child), then the peak RSS
(on Linux ``VmHWM``, the high-water mark, reset after the imports via
``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, which cannot be reset) after the load and again after one forward pass of 8
tokens (which touches every weight, so a lazily mapped file cannot look
cheaper than it is), and the wall time of the load and of load + that first
forward (the figure to compare: a mapped file pays its page-ins there). The file is read once before
the runs so every method sees a warm page cache. Each method runs ``--runs``
times; the table shows the median.

    python bench/load_memory.py                   # GPT-2 124M and Gemma-3 270M, 3 runs each
    python bench/load_memory.py --models gemma3 --runs 1 --methods "portagpt mmap,transformers"
    python bench/load_memory.py --keep /tmp/ckpt  # keep (or reuse) the checkpoint folder

Targets: portagpt's peak RSS above the baseline <= 1.10 x checkpoint bytes,
and its load + first forward wall time <= transformers'. The machine may be
shared: the methods run interleaved, and the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METHODS = ("portagpt meta", "portagpt mmap", "portagpt safetensors", "naive", "transformers")
DEFAULT_METHODS = ("portagpt meta", "portagpt mmap", "transformers")
MODELS = ("gpt2", "gemma3", "qwen3")
MB = 2**20


# ---- the checkpoint --------------------------------------------------------------------------
def hf_config(model: str):  # noqa: ANN201
    if model == "gpt2":
        from transformers import GPT2Config

        return GPT2Config()  # GPT-2 small: 124M parameters, 50,257 vocabulary, tied head
    if model == "gemma3":
        from transformers import AutoConfig

        from portagpt.registry import get_family

        fam = get_family("gemma3")
        d = dict(fam.config_to_hf(fam.preset("270M")))  # Gemma 3 270M's shapes
        return AutoConfig.for_model(d.pop("model_type"), **d)
    from transformers import Qwen3Config

    return Qwen3Config(  # ~125M parameters: 0.5 GB in fp32
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )


def build_checkpoint(model: str, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config(model), dtype=torch.float32)
    hf.save_pretrained(str(folder))


def checkpoint_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


# ---- one measurement, in a child process -----------------------------------------------------
def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """VmHWM (the high-water mark clear_refs resets) on Linux; ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(method: str, path: str) -> None:
    import gc

    import safetensors.torch  # noqa: F401 - every child imports the same modules
    import torch
    from transformers import AutoModelForCausalLM

    import portagpt.loaders as loaders

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    gc.collect()
    base = rss_now()
    reset = reset_peak()
    t0 = time.perf_counter()
    if method == "transformers":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
    else:
        loader = {
            "portagpt meta": "meta",
            "portagpt mmap": "mmap",
            "portagpt safetensors": "safetensors",
            "naive": "state_dict",
        }[method]
        model = loaders.load_full(path, loader=loader, tokenizer=False).model
    seconds = time.perf_counter() - t0
    peak_load = peak_rss()
    ids = torch.arange(1, 9)[None]
    with torch.no_grad():
        out = model(ids)
    first_forward = time.perf_counter() - t0
    logits = out.logits if hasattr(out, "logits") else out
    assert torch.isfinite(logits).all()
    print(
        json.dumps(
            {
                "method": method,
                "seconds": seconds,
                "first_forward": first_forward,
                "baseline": base,
                "peak_load": peak_load - base,
                "peak_forward": peak_rss() - base,
                "end": rss_now() - base,
                "peak_reset": reset,
            }
        )
    )


def measure(method: str, path: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--path", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the table -------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gpt2,gemma3", help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="checkpoint folder to write (or reuse if it exists)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path)
        return
    for model in args.models.split(","):
        run_model(model.strip(), args)


def run_model(model: str, args: argparse.Namespace) -> None:
    if model not in MODELS:
        raise SystemExit(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep / model if args.keep else Path(tmp) / model
        if not (folder / "config.json").is_file():
            print(f"building a {model} checkpoint in {folder} ...", flush=True)
            build_checkpoint(model, folder)
        size = checkpoint_bytes(folder)
        for f in folder.glob("*.safetensors"):  # warm the page cache once for everyone
            with open(f, "rb") as fh:
                while fh.read(64 * MB):
                    pass
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(args.runs):
            for m in methods:  # interleaved, so drift in machine load hits every method alike
                results[m].append(measure(m, folder))
        report(model, size, results, args.runs)


def report(model: str, size: int, results: dict[str, list[dict]], runs: int) -> None:
    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\ncheckpoint: {model}, fp32, {size / MB:.1f} MiB; median of {runs} run(s); CPU threads: {os.cpu_count()}")
    if not all(r["peak_reset"] for rows in results.values() for r in rows):
        print("(the RSS high-water mark could not be reset after imports: peaks include them)")
    head = (
        f"{'method':<22} {'load s':>7} {'+1st fwd s':>10} {'peak RSS after load':>20} {'x ckpt':>7} "
        f"{'peak after forward':>19} {'x ckpt':>7} {'RSS at end':>11}"
    )
    print(head)
    print("-" * len(head))
    for m, rows in results.items():
        load, fwd, end = med(rows, "peak_load"), med(rows, "peak_forward"), med(rows, "end")
        print(
            f"{m:<22} {med(rows, 'seconds'):>7.2f} {med(rows, 'first_forward'):>10.2f} "
            f"{load / MB:>16.1f} MiB {load / size:>7.2f} "
            f"{fwd / MB:>15.1f} MiB {fwd / size:>7.2f} {end / MB:>7.1f} MiB"
        )
    if "transformers" not in results:
        return
    hf = results["transformers"]
    for ours in ("portagpt meta", "portagpt mmap"):
        if ours not in results:
            continue
        rows = results[ours]
        t = med(rows, "first_forward") / med(hf, "first_forward")
        rss = med(rows, "peak_forward") / size
        print(
            f"{ours}: load + first forward {t:.2f}x transformers' wall time (target <= 1.0: "
            f"{'met' if t <= 1.0 else 'MISSED'}), peak RSS {rss:.2f}x checkpoint bytes "
            f"(target <= 1.10: {'met' if rss <= 1.10 else 'MISSED'}; transformers "
            f"{med(hf, 'peak_forward') / size:.2f}x)"
        )


if __name__ == "__main__":
    main()
