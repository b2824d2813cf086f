"""The checkpoint-format module: config <-> dict round trips, atomic writes, crash states, disk full."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

from portagpt.core import checkpoint_format as fmt
from portagpt.core.checkpoint_format import (
    atomic_folder,
    atomic_write_bytes,
    config_from_dict,
    config_to_dict,
    live_folder,
    remove_stale_temps,
    temp_name,
)
from portagpt.errors import ConfigError, DiskFullError
from portagpt.registry import get_registry


def through_json(config):
    return json.loads(json.dumps(config_to_dict(config)))


def every_family_config():
    for fam in get_registry().families.values():
        yield f"{fam.name}-smoke", type(fam.smoke_config), fam.smoke_config
        for name, preset in fam.presets.items():
            yield f"{fam.name}-{name}", type(preset.config), preset.config


@pytest.mark.parametrize("label,cls,config", list(every_family_config()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_family_config_survives_a_json_round_trip(label, cls, config) -> None:
    rebuilt = config_from_dict(cls, through_json(config))
    assert rebuilt == config, label
    assert type(rebuilt) is type(config)


@dataclass(frozen=True)
class Inner:
    theta: float = 1.0
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outer:
    width: int = 4
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    layers: tuple[str, ...] = ()
    eos: int | tuple[int, ...] | None = 1
    pair: tuple[int, float] = (1, 2.0)
    dtype: torch.dtype = torch.float32


def test_nested_dataclasses_tuples_unions_and_dtypes_are_rebuilt() -> None:
    cfg = Outer(
        width=8,
        inner=Inner(2.0, {"factor": 4.0}),
        maybe=Inner(3.0),
        layers=("a", "b"),
        eos=(1, 2),
        pair=(3, 4.5),
        dtype=torch.bfloat16,
    )
    data = through_json(cfg)
    assert data["inner"] == {"theta": 2.0, "params": {"factor": 4.0}} and data["dtype"] == "bfloat16"
    rebuilt = config_from_dict(Outer, data)
    assert rebuilt == cfg and isinstance(rebuilt.maybe, Inner) and isinstance(rebuilt.eos, tuple)
    assert isinstance(rebuilt.layers, tuple) and isinstance(rebuilt.pair, tuple)


def test_a_template_fills_fields_missing_from_the_dict() -> None:
    rebuilt = config_from_dict(Outer(width=16, layers=("x",)), {"eos": None})
    assert rebuilt == Outer(width=16, layers=("x",), eos=None)


def test_unknown_keys_are_refused_naming_the_file_and_key() -> None:
    with pytest.raises(ConfigError, match=r"run/portagpt\.json.*bogus.*Outer"):
        config_from_dict(Outer, {"width": 2, "bogus": 1}, "run/portagpt.json")


@dataclass(frozen=True)
class Checked:
    heads: int = 2

    def __post_init__(self) -> None:
        if self.heads < 1:
            raise ValueError(f"heads must be >= 1, got {self.heads}")


def test_a_value_the_dataclass_rejects_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not fit Checked: heads must be >= 1"):
        config_from_dict(Checked, {"heads": 0})
    with pytest.raises(ConfigError, match="nope that Inner does not know"):  # nested too
        config_from_dict(Outer, {"inner": {"theta": 1.0, "nope": 2}})


# ---- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "run.json"
    path.write_text("old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_disk_full_during_a_write_keeps_the_old_file_and_names_it(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.json"
    path.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fmt.os, "replace", full)
    with pytest.raises(DiskFullError, match=r"run\.json.*needs about 1.0 KB.*free") as info:
        atomic_write_bytes(path, b"x" * 1000)
    assert "\n\n" not in str(info.value)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_failed_folder_leaves_nothing_and_the_old_folder_intact(tmp_path) -> None:
    target = tmp_path / "ck"
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target, replace=True) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert (target / "a").read_text() == "1"


def test_disk_full_inside_a_folder_names_the_file_being_written(tmp_path) -> None:
    with pytest.raises(DiskFullError, match=r"ck/weights\.bin.*needs about 2.0 MB") as info:
        with atomic_folder(tmp_path / "ck", needed=2_000_000, hint="Try again.") as tmp:
            with fmt.writing(tmp / "weights.bin"):
                raise RuntimeError("Error while serializing: I/O error: File too large (os error 27)")
    assert str(info.value).endswith("Try again.")
    assert list(tmp_path.iterdir()) == []


def test_readers_fall_back_to_the_backup_between_the_two_renames(tmp_path) -> None:
    target = tmp_path / "ck"
    assert live_folder(target) is None
    (tmp_path / ".ck.old").mkdir()
    assert live_folder(target) == tmp_path / ".ck.old"
    target.mkdir()  # the second rename done, the backup not yet removed
    assert live_folder(target) == target


def test_stale_temp_cleanup_spares_live_processes_and_other_hosts(tmp_path) -> None:
    target = tmp_path / "ck"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = temp_name(target)
    ours_dead = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    parent_live = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-")
    other_host = tmp_path / f".ck.tmp-elsewhere-{dead_pid}-abcd"
    for p in (mine, ours_dead, parent_live, other_host):
        p.mkdir()
    assert remove_stale_temps(target) == [ours_dead]
    assert mine.exists() and parent_live.exists() and other_host.exists()


def test_sidecar_of_another_format_version_is_refused_and_a_versionless_one_read(tmp_path) -> None:
    from portagpt.errors import CheckpointError

    path = tmp_path / "portagpt.json"
    assert fmt.check_format_version({"family": "x"}, path) == {"family": "x"}
    assert fmt.check_format_version(fmt.sidecar("x", Outer()), path, required=True)["family"] == "x"
    with pytest.raises(CheckpointError, match=r"portagpt\.json.*format_version 99.*reads version 1"):
        fmt.check_format_version({"format_version": 99}, path)
    with pytest.raises(CheckpointError, match="format_version None"):
        fmt.check_format_version({}, path, required=True)
