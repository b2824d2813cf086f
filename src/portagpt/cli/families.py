"""``portagpt families [--json]``: every registered family and where it came from."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("families", parents=parents, help="list the registered model families")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import get_registry

    reg = get_registry()
    rows = []
    for name in sorted(reg.families):
        fam = reg.families[name]
        rows.append(
            {
                "name": name,
                "model_types": list(fam.hf_model_types),
                "presets": list(fam.presets),
                "distribution": fam.distribution,
                "version": fam.version,
                "default_repo_id": fam.default_repo_id,
                "transformers_class": fam.transformers_class,
                "description": fam.description,
            }
        )
    if args.json:
        print(json.dumps({"families": rows, "errors": reg.errors}))
    else:
        for r in rows:
            print(f"{r['name']:<10} {r['distribution']} {r['version']}".rstrip())
            print(f"    model types: {', '.join(r['model_types'])}")
            print(f"    presets:     {', '.join(r['presets'])}")
            if r["default_repo_id"]:
                print(f"    hub default: {r['default_repo_id']}")
            if r["description"]:
                print(f"    {r['description']}")
        for err in reg.errors:
            print(f"plugin problem: {err}", file=sys.stderr)
    return 1 if reg.errors else 0
