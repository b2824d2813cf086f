"""Decode speed: portagpt's generation harness against transformers ``generate``, side by side.

Each model is built once with transformers (``AutoModelForCausalLM.from_config``,
seeded, every tensor perturbed), saved with ``save_pretrained`` to a temporary
folder, and both sides load that folder: ``portagpt.load`` and
``AutoModelForCausalLM.from_pretrained``. Same prompt (16 random ids), batch 1,
greedy, fp32, CPU, 128 new tokens (no stop token). Timed: the whole
generation call (prefill + 128 steps), best of ``--runs`` after one warm-up,
the two sides alternating. tokens/s = new tokens / seconds.

Models:

* ``tiny``  -- GPT-2, 2 layers, 64 wide, vocabulary 512: per-step overhead dominates;
* ``124M``  -- GPT-2 small's config (50,257 vocabulary, tied head), random weights;
* ``270M``  -- Gemma 3 270M's config (262,144 vocabulary, tied head, 5:1 sliding/global).

The roofline: decoding one token at batch 1 reads every weight matrix once
(the tied embedding once, as the head; an untied input embedding only one row),
so a token cannot take less than ``weight bytes / memory bandwidth``. The
bandwidth is measured here, in the same process, as the best effective rate of
a fp32 matrix-vector product over 256 MiB (far past the caches), computed every
way the process can: one ``torch.mv`` call (MKL, one core), the row-split
product of portagpt's eager decode path (all threads), and, with ``--compile``,
inductor's fused reduction. It is re-measured before each model; the best rate
seen so far is the reference. A plain streaming read (``sum``) is printed next
to it as the machine's ceiling. "share of roofline" = measured tokens/s /
(bandwidth / weight bytes per token).

Threads: portagpt decodes models under 16 MiB of weights on one thread (its
default, see ``core/generate.py``); for those a row of transformers on the
same thread count is added. ``--threads N`` sets torch's count for both sides.

The KV-cache figure decodes 256 new tokens on the GPT-2 124M model with
portagpt's cache and with ``use_cache=False`` (the whole context recomputed
every step).

    python bench/generate_speed.py                       # all three models + the KV-cache figure
    python bench/generate_speed.py --models tiny --runs 5 --no-kv
    python bench/generate_speed.py --models tiny,270M --no-kv --busy   # the busy-machine rows
    python bench/generate_speed.py --compile             # also time generate(..., compile=True)

The machine's load average is printed next to the figures: other processes
share the CPU, so compare the two sides of one run, not runs taken at
different times.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

PROMPT_LEN = 16


# ---- the machine ----------------------------------------------------------------------------
def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _best_rate(fn: Callable[[], object], nbytes: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best


@functools.cache
def _probe_matrix() -> torch.Tensor:
    """The 256 MiB of fp32 every bandwidth probe reads: made once per run."""
    return torch.randn(4096 * 16384, generator=torch.Generator().manual_seed(0))


@functools.cache
def _compiled_reduce() -> Callable[..., torch.Tensor]:
    """``(W * x).sum(-1)`` through ``torch.compile``: one compiled function per run."""
    return torch.compile(lambda w, x: (w * x).sum(-1), dynamic=False)


def gemv_bandwidths(compile: bool = False, repeats: int = 20) -> dict[str, float]:
    """Best effective bytes/s of a fp32 matrix-vector product over 256 MiB (far past the
    caches), W's bytes / time, for each way this process can compute it, over three shapes
    of the same matrix (4096 x 16384, 16384 x 4096 and 65536 x 1024: long rows, and rows as
    short as transformer weights have):

    * ``torch.mv``: one MKL call (what ``F.linear`` does for one row);
    * ``row-split``: ``portagpt.core.linear.split_gemv``, the rows in blocks across threads;
    * ``fused reduction``: ``torch.compile`` of ``(W * x).sum(-1)`` (with ``--compile``).

    The roofline uses the best of them: the fastest this machine was seen to stream weights.
    """
    from portagpt.core.linear import SPLIT_BLOCKS_PER_THREAD, split_gemv

    flat = _probe_matrix()
    reduce = _compiled_reduce() if compile else None
    nbytes = flat.numel() * flat.element_size()
    blocks = max(1, torch.get_num_threads() * SPLIT_BLOCKS_PER_THREAD)
    gen = torch.Generator().manual_seed(1)
    rates: dict[str, float] = {}
    with torch.inference_mode():
        for rows, cols in ((4096, 16384), (16384, 4096), (65536, 1024)):
            w = flat.view(rows, cols)
            x = torch.randn(cols, generator=gen)
            ways: dict[str, Callable[[], object]] = {
                "torch.mv": lambda w=w, x=x: torch.mv(w, x),
                "row-split": lambda w=w, x=x: split_gemv(x.view(1, -1), w, blocks),
            }
            if reduce is not None:
                reduce(w, x)  # compiles on the first measurement of each shape only
                ways["fused reduction"] = lambda w=w, x=x: reduce(w, x)
            for name, fn in ways.items():
                rates[name] = max(rates.get(name, 0.0), _best_rate(fn, nbytes, repeats))
    return rates


def read_bandwidth(repeats: int = 20) -> float:
    """Best bytes/s of summing the probe's 256 MiB of fp32 (a plain streaming read)."""
    flat = _probe_matrix()
    with torch.inference_mode():
        return _best_rate(flat.sum, flat.numel() * flat.element_size(), repeats)


# ---- the models -------------------------------------------------------------------------------
def hf_config(name: str):  # noqa: ANN201 - a transformers config
    from dataclasses import replace

    from transformers import AutoConfig

    from portagpt.registry import get_family

    gpt2, gemma3 = get_family("gpt2"), get_family("gemma3")
    if name == "tiny":
        small = replace(
            gpt2.preset("124M"),
            vocab_size=512,
            context_length=256,
            emb_dim=64,
            n_heads=4,
            n_layers=2,
        )
        d = gpt2.config_to_hf(small)
    elif name == "124M":
        d = gpt2.config_to_hf(gpt2.preset("124M"))
    elif name == "270M":
        d = gemma3.config_to_hf(gemma3.preset("270M"))
    else:
        raise SystemExit(f"unknown model {name!r}: choose tiny, 124M, 270M")
    d = dict(d)
    model_type = d.pop("model_type")
    return AutoConfig.for_model(model_type, **d)


def write_checkpoint(name: str, folder: str):  # noqa: ANN201 - the transformers config
    """Save model ``name`` (seeded, perturbed) to ``folder``; returns its config."""
    from transformers import AutoModelForCausalLM

    from portagpt.smoke_tests.reference import perturb_

    config = hf_config(name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    perturb_(model, seed=0, scale=0.02)
    model.save_pretrained(folder)
    del model
    gc.collect()
    return config


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of the weights one batch-1 decode step reads: every distinct parameter once, except
    embedding tables that are only looked up (one row each), not used as the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = head.weight if head is not None else None
    lookups = set()
    for mod in model.modules():
        if isinstance(mod, torch.nn.Embedding) and mod.weight is not head_weight:
            lookups.add(id(mod.weight))
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in lookups:
            total += p.shape[-1] * p.element_size()
        else:
            total += p.numel() * p.element_size()
    return total


# ---- timing --------------------------------------------------------------------------------------
@dataclass
class Timing:
    best: float  # seconds of the best run
    ids: list[int]


def best_of(fn: Callable[[], list[int]], runs: int) -> Timing:
    best, ids = float("inf"), []
    for _ in range(runs):
        t0 = time.perf_counter()
        ids = fn()
        best = min(best, time.perf_counter() - t0)
    return Timing(best, ids)


def side_by_side(fns: dict[str, Callable[[], list[int]]], runs: int) -> dict[str, Timing]:
    """Warm each up once, then alternate them ``runs`` times; best time of each."""
    for fn in fns.values():
        fn()
    out = {name: Timing(float("inf"), []) for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = best_of(fn, 1)
            if t.best < out[name].best:
                out[name] = t
    return out


def bench_model(name: str, args: argparse.Namespace, bandwidth: float) -> None:
    from transformers import AutoModelForCausalLM

    import portagpt
    from portagpt.core.generate import generate

    n_new = args.new_tokens
    with tempfile.TemporaryDirectory(prefix=f"portagpt-bench-{name}-") as folder:
        t0 = time.perf_counter()
        config = write_checkpoint(name, folder)
        t_write = time.perf_counter() - t0
        # load + one forward over the prompt: a loader that maps the file lazily pays its
        # page-ins on first use, so the forward makes the two sides comparable
        vocab = config.get_text_config().vocab_size
        prompt = torch.randint(
            0, vocab, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(1)
        )
        t0 = time.perf_counter()
        ours, _ = portagpt.load(folder, dtype="float32", tokenizer=False)
        with torch.inference_mode():
            ours(prompt)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.inference_mode():
            theirs(prompt)
        t_theirs = time.perf_counter() - t0
    theirs.generation_config.eos_token_id = None  # run to max_new_tokens on both sides
    prompt_list = prompt[0].tolist()

    def run_theirs() -> list[int]:
        with torch.inference_mode():
            out = theirs.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                pad_token_id=0,
            )
        return out[0, PROMPT_LEN:].tolist()

    def run_ours(compile: bool = False, threads: int | None = None) -> list[int]:
        kw = {"compile": True} if compile else {}
        return generate(ours, prompt_list, max_new_tokens=n_new, threads=threads, **kw).new_ids[0]

    n = torch.get_num_threads()
    fns: dict[str, Callable[[], list[int]]] = {
        "transformers (1 thr)": with_threads(1, run_theirs),
        f"transformers ({n} thr)": run_theirs,
        "portagpt default": run_ours,
        "portagpt fixed 1 thr": lambda: run_ours(threads=1),
        f"portagpt fixed {n} thr": lambda: run_ours(threads=n),
    }
    compile_warm = None
    if args.compile:
        t0 = time.perf_counter()
        run_ours(compile=True)
        compile_warm = time.perf_counter() - t0
        fns["portagpt compile"] = lambda: run_ours(compile=True)
    timings = side_by_side(fns, args.runs)
    wbytes = weight_bytes_per_token(theirs)
    roof = bandwidth / wbytes  # tokens/s if only weight reads counted
    tps = {k: n_new / t.best for k, t in timings.items()}
    ref = max(("transformers (1 thr)", f"transformers ({n} thr)"), key=tps.__getitem__)
    same = all(t.ids == timings[ref].ids for t in timings.values())
    print(
        f"\n[{name}] {sum(p.numel() for p in theirs.parameters()) / 1e6:.1f}M parameters, "
        f"{wbytes / 2**20:.1f} MiB of weights read per token; "
        f"write {t_write:.1f} s, load + first forward: portagpt {t_ours:.2f} s, transformers {t_theirs:.2f} s"
    )
    print(
        f"  roofline at {bandwidth / 1e9:.2f} GB/s: {roof:.1f} tokens/s; reference: {ref} (the faster)"
    )
    for k, v in tps.items():
        print(
            f"  {k:<27} {v:8.1f} tokens/s  x{v / tps[ref]:5.2f} vs {ref}  "
            f"{100 * v / roof:5.1f} % of roofline"
        )
    if compile_warm is not None:
        print(f"  compile warm-up (first call, compiling included): {compile_warm:.1f} s")
    print(
        f"  same greedy ids on every row (portagpt eager{', compiled' if args.compile else ''}"
        f" and transformers): {'yes' if same else 'NO'}"
    )
    if not same:
        for k, t in timings.items():
            diff = [
                i for i, (a, b) in enumerate(zip(t.ids, timings[ref].ids, strict=True)) if a != b
            ]
            print(f"    {k}: first step differing from {ref}: {diff[0] if diff else None}")
    print(f"  load average: {load_average()}")
    if args.busy:
        from portagpt.core.generate import step_threads

        same_as = step_threads(ours, torch.device("cpu"), None)  # a size rule fixes the count
        busy_rows(name, run_ours, n, n_new, args.runs, same_as)


def busy_rows(
    name: str,
    run_ours: Callable[..., list[int]],
    n: int,
    n_new: int,
    runs: int,
    same_as: int | None = None,
) -> None:
    """portagpt's default against its fixed thread counts while one other process spins."""
    with competitor():
        fns = {
            "portagpt default": run_ours,
            "portagpt fixed 1 thr": lambda: run_ours(threads=1),
            f"portagpt fixed {n} thr": lambda: run_ours(threads=n),
        }
        timings = side_by_side(fns, runs)
        tps = {k: n_new / t.best for k, t in timings.items()}
        print(f"  busy machine ({name}, one competing CPU-bound process), load {load_average()}:")
    best_fixed = max((k for k in tps if "fixed" in k), key=tps.__getitem__)
    for k, v in tps.items():
        print(f"    {k:<25} {v:8.1f} tokens/s  x{v / tps[best_fixed]:5.2f} vs {best_fixed}")
    ratio = tps["portagpt default"] / tps[best_fixed]
    print(
        f"    default within 10 % of the best fixed count: {'met' if ratio >= 0.9 else 'MISSED'} "
        f"({ratio:.2f}x)"
    )
    if same_as is not None:
        print(
            f"    (here the default is the fixed {same_as}-thread path itself: the size rule "
            "chose it; the two rows differ by the machine's noise alone)"
        )


SPIN = (
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(384, 384)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


@contextlib.contextmanager
def competitor() -> Iterator[None]:
    """One other CPU-bound process (a single-threaded matmul loop) for the duration."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(1.0)  # let it start spinning
        yield
    finally:
        proc.kill()
        proc.wait()


def with_threads(n: int, fn: Callable[[], list[int]]) -> Callable[[], list[int]]:
    def run() -> list[int]:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def bench_kv_cache(args: argparse.Namespace) -> None:
    import portagpt
    from portagpt.core.generate import generate

    n_new = args.kv_new_tokens
    with tempfile.TemporaryDirectory(prefix="portagpt-bench-kv-") as folder:
        write_checkpoint("124M", folder)
        model, _ = portagpt.load(folder, dtype="float32", tokenizer=False)
    prompt = torch.randint(0, 50257, (PROMPT_LEN,), generator=torch.Generator().manual_seed(1))
    prompt_list = prompt.tolist()

    def run(use_cache: bool) -> list[int]:
        return generate(model, prompt_list, max_new_tokens=n_new, use_cache=use_cache).new_ids[0]

    cached = best_of(run_cached := (lambda: run(True)), 1)  # warm-up
    cached = best_of(run_cached, args.runs)
    uncached = best_of(lambda: run(False), 1)  # slow: one run
    a, b = n_new / cached.best, n_new / uncached.best
    print(f"\n[KV cache, GPT-2 124M, {n_new} new tokens after {PROMPT_LEN}]")
    print(f"  KV cache   {a:8.1f} tokens/s")
    print(f"  no cache   {b:8.1f} tokens/s")
    print(f"  ratio      x{a / b:.1f}; same ids: {'yes' if cached.ids == uncached.ids else 'NO'}")
    print(f"  load average: {load_average()}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="tiny,124M,270M", help="comma-separated: tiny,124M,270M")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3, help="timed runs per side (best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time generate(..., compile=True)")
    p.add_argument("--no-kv", action="store_true", help="skip the KV cache vs no cache figure")
    p.add_argument(
        "--busy", action="store_true", help="also time portagpt beside one competing busy process"
    )
    p.add_argument("--kv-new-tokens", type=int, default=256)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads; load average {load_average()}"
    )
    seen: dict[str, float] = {}

    def measure() -> float:
        for k, v in gemv_bandwidths(args.compile).items():
            seen[k] = max(seen.get(k, 0.0), v)
        return max(seen.values())

    bandwidth = measure()
    print(
        "GEMV fp32 over 256 MiB, best so far: "
        + ", ".join(f"{k} {v / 1e9:.2f} GB/s" for k, v in seen.items())
        + f"; plain read (sum) {read_bandwidth() / 1e9:.2f} GB/s"
    )
    for name in args.models.split(","):
        bandwidth = measure()  # the roofline: the best GEMV rate seen so far, any way
        bench_model(name.strip(), args, bandwidth)
        gc.collect()  # the models of one size are gone before the next is built
    if not args.no_kv:
        bench_kv_cache(args)
    measure()
    print(
        "\nGEMV re-measured at the end, best of the run: "
        + ", ".join(f"{k} {v / 1e9:.2f} GB/s" for k, v in seen.items())
        + f"; load average {load_average()}"
    )


if __name__ == "__main__":
    main()
