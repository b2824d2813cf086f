"""keep_freed_memory: large freed buffers stay in the heap inside the block, go back after it.

Measured with glibc's own accounting (``mallinfo2``: ``hblkhd`` is the bytes
held in mmapped chunks, ``fordblks`` the free bytes kept in the heap) and with
the process's page-fault count. The heap checks run in a fresh interpreter:
whether a big request is mapped or served from the heap depends on what the
process freed before.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from portagpt.core import memory

pytestmark = pytest.mark.skipif(
    not (memory.available() and hasattr(memory._LIBC, "mallinfo2")),
    reason="needs glibc 2.33+ (mallopt, mallinfo2)",
)

CHECKS = """
import ctypes, resource, torch
from portagpt.core import memory

MB = 2**20
BIG = 96 * MB  # past glibc's largest mmap threshold (32 MiB)
PAGES = BIG // resource.getpagesize()
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]


memory._LIBC.mallinfo2.restype = MallInfo2
mallinfo = memory._LIBC.mallinfo2


def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def faults_per_cycle(cycles=4):
    # one training-step-like cycle: allocate a big buffer, write it, free it; the first
    # cycles may grow the heap (small objects allocated in between pin a freed chunk)
    for _ in range(8):
        torch.empty(BIG // 4).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        torch.empty(BIG // 4).fill_(1.0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / cycles


def mapped_and_returned():
    before = mallinfo().hblkhd
    t = torch.empty(BIG // 4)
    assert mallinfo().hblkhd - before >= BIG  # its own mapping
    del t
    assert mallinfo().hblkhd - before < BIG  # unmapped when freed
    assert faults_per_cycle() > PAGES / 2  # so every cycle faults its pages in anew
"""


def run_checks(body: str) -> None:
    code = CHECKS + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_outside_the_block_a_big_buffer_is_mapped_and_returned():
    run_checks("mapped_and_returned()")


def test_inside_the_block_a_freed_big_buffer_is_kept_and_reused():
    run_checks("""
        with memory.keep_freed_memory() as on:
            assert on
            mapped = mallinfo().hblkhd
            t = torch.empty(BIG // 4)
            assert mallinfo().hblkhd == mapped  # from the heap, not a new mapping
            del t
            assert mallinfo().fordblks >= BIG  # freed, but kept by the process
            assert faults_per_cycle() < PAGES / 50  # the next cycles reuse the same pages
            kept = resident()
        assert kept - resident() > BIG // 2  # the block's end handed the pages back
        mapped_and_returned()  # and glibc's defaults are back
    """)


def test_nested_blocks_keep_the_outer_setting():
    run_checks("""
        with memory.keep_freed_memory():
            with memory.keep_freed_memory():
                pass
            before = mallinfo().hblkhd
            t = torch.empty(BIG // 4)
            assert mallinfo().hblkhd == before  # still inside the outer block
            del t
        mapped_and_returned()
    """)


def test_disabled_changes_nothing():
    run_checks("""
        with memory.keep_freed_memory(enabled=False) as on:
            assert not on
            mapped_and_returned()
    """)


def test_cpu_training_runs_its_steps_inside_the_block(tmp_path):
    from dataclasses import replace

    from portagpt.core.data import build_loaders
    from portagpt.core.train import Callback, TrainConfig, Trainer
    from portagpt.registry import get_family

    depths = []

    class Probe(Callback):
        def on_step_end(self, trainer, loss):
            depths.append(memory._DEPTH)

    fam = get_family("gpt2")
    cfg = replace(fam.smoke_config, context_length=16, vocab_size=50257)
    tokenizer = fam.load_tokenizer(None, cfg)
    text = tmp_path / "text.txt"
    text.write_text("Every effort moves you forward, one small step at a time. " * 20)
    splits = build_loaders(tokenizer, [text], context_length=16, batch_size=4, seed=1)
    model = fam.build_model(cfg)
    Trainer(
        model, splits.train_loader, splits.val_loader, TrainConfig(epochs=1, sample_tokens=0),
        device="cpu", callbacks=[Probe()], progress=False, log=None,
    ).fit()  # fmt: skip
    assert depths and all(d == 1 for d in depths)  # every step ran with freed memory kept
    assert memory._DEPTH == 0  # and the defaults are back
