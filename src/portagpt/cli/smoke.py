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


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..smoke_tests import CHECK_NAMES

    if args.list_checks:
        print("\n".join(CHECK_NAMES))
        return 0

    def header(fam, plugin: str) -> None:  # noqa: ANN001 - a Family
        src = f"{fam.distribution} {fam.version}".strip() or "?"
        print(f"family {fam.name!r} (plugin {plugin!r}, distribution {src})", flush=True)

    def line(result) -> None:  # noqa: ANN001 - a CheckResult
        print(f"  {result.line()}", flush=True)

    def verdict(r) -> None:  # noqa: ANN001 - a SmokeReport
        n_fail, n_skip = len(r.failures), sum(x.skipped for x in r.results)
        print(f"  {'conforms' if r.passed else 'DOES NOT CONFORM'}: "
              f"{len(r.results) - n_fail - n_skip} passed, {n_fail} failed, "
              f"{n_skip} skipped in {r.seconds:.1f}s", flush=True)

    quiet = args.json
    results = api.smoke(
        args.family or None, all=args.all, check=args.check or None, plugin=args.plugin,
        on_family=None if quiet else header, on_result=None if quiet else line,
        on_report=None if quiet else verdict, on_note=lambda text: print(text, file=sys.stderr),
    )  # fmt: skip
    if args.json:
        print(json.dumps(results.to_dict()))
    else:
        for err in results.plugin_errors:
            print(f"plugin problem: {err}", file=sys.stderr)
        failed = [r.family for r in results.reports if not r.passed]
        if failed:
            print(f"non-conforming: {', '.join(failed)}", file=sys.stderr)
    return 0 if results.passed else 1
