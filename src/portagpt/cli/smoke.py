"""``portagpt smoke``: run the conformance kit on families and print a line per check.

::

    portagpt smoke --family mistral            # one family (repeatable, or a,b)
    portagpt smoke --all --json                # every registered family, one JSON object
    portagpt smoke --plugin tests/fixtures/broken_plugin.py --family brokengpt

Each line reads ``PASS|FAIL|SKIP check seconds detail``. The exit status is 1
when any check fails (or, with ``--all``, when a plugin failed to register),
0 otherwise; an unknown family or check is a usage error (status 2).
``--plugin`` registers an extra plugin module (module name, ``module:attr``
or a ``.py`` path) for this run only, as if it were installed. A ``.py`` file
inside a package (``src/my_pkg/plugin.py`` with relative imports) is imported
as part of its package; a plugin that is installed already is checked once,
with a note.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "smoke",
        parents=parents,
        help="run the family conformance kit (meta build, cache, padding, weight map, parity, ...)",
        description=(
            "Run the family conformance kit; prints PASS/FAIL/SKIP, the check, its seconds and a "
            "detail per line. Exit status 1 when any check fails (or, with --all, a plugin failed "
            "to register). The guide: docs/plugins.md."
        ),
    )
    p.add_argument("--family", action="append", default=[], metavar="NAME", help="family to check (repeatable, or a,b)")
    p.add_argument("--all", action="store_true", help="check every registered family")
    p.add_argument("--check", action="append", default=[], metavar="NAME", help="run only these checks (repeatable)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="register an extra plugin (module, module:attr or .py path)")
    p.add_argument("--list-checks", action="store_true", help="list the check names and exit")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=run)


def _names(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out += [n.strip() for n in v.split(",") if n.strip() and n.strip() not in out]
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..smoke_tests import CHECK_NAMES

    if args.list_checks:
        print("\n".join(CHECK_NAMES))
        return 0
    families = _names(args.family)
    if bool(families) == bool(args.all):
        raise UsageError("Say which families to check: --family NAME (repeatable) or --all, not both.")

    from ..registry import build_registry, get_registry
    from ..smoke_tests.plugins import load_plugin_modules
    from ..smoke_tests.runner import resolve_family, run_smoke

    extras = load_plugin_modules(args.plugin)
    reg = build_registry(extra_plugins=extras) if extras else get_registry()
    for spec, (plugin, name, _) in zip(args.plugin, extras, strict=True):
        installed = reg.pm.get_name(plugin)
        if installed is not None and installed != name:
            print(
                f"note: --plugin {spec} is already installed (plugin {installed!r}); its families "
                "are checked as installed, once.",
                file=sys.stderr,
            )
    if args.all:
        families = sorted(reg.families)
    for name in families:  # unknown names fail before any check runs
        resolve_family(name, reg)
    checks = _names(args.check) or None
    unknown = [c for c in checks or () if c not in CHECK_NAMES]
    if unknown:
        raise UsageError(
            f"Unknown check(s) {', '.join(map(repr, unknown))}. Known: {', '.join(CHECK_NAMES)} "
            "(portagpt smoke --list-checks)."
        )

    reports = []
    for name in families:
        if not args.json:
            fam, plugin = resolve_family(name, reg)
            src = f"{fam.distribution} {fam.version}".strip() or "?"
            print(f"family {fam.name!r} (plugin {plugin!r}, distribution {src})", flush=True)

        def show(result, _json=args.json):  # noqa: ANN001, ANN202
            if not _json:
                print(f"  {result.line()}", flush=True)

        reports.append(run_smoke(name, checks=checks, registry=reg, on_result=show))
        if not args.json:
            r = reports[-1]
            n_fail, n_skip = len(r.failures), sum(x.skipped for x in r.results)
            verdict = "conforms" if r.passed else "DOES NOT CONFORM"
            print(f"  {verdict}: {len(r.results) - n_fail - n_skip} passed, {n_fail} failed, "
                  f"{n_skip} skipped in {r.seconds:.1f}s", flush=True)
    failed = [r.family for r in reports if not r.passed]
    plugin_failed = bool(reg.errors) and args.all
    if args.json:
        print(json.dumps({
            "passed": not failed and not plugin_failed,
            "reports": [r.to_dict() for r in reports],
            "plugin_errors": list(reg.errors),
        }))
    else:
        for err in reg.errors:
            print(f"plugin problem: {err}", file=sys.stderr)
        if failed:
            print(f"non-conforming: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or plugin_failed else 0
