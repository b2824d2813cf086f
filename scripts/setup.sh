#!/usr/bin/env bash
# Set up ./.venv for portagpt on a fresh machine: CPU torch first (pinned, so no
# multi-GB CUDA build is pulled), then portagpt itself in editable mode.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --test   # + pytest, tensorflow-cpu (the [tf] extra), the book's
#                                  #   llms-from-scratch (--no-deps), and the example plugin
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
"${PIP[@]}" "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
    "${PIP[@]}" -e ".[test,tf]"
    # The book's own package is the reference for its formats and loop: tests and benches only.
    "${PIP[@]}" --no-deps "llms-from-scratch==1.0.19"
    for plugin in examples/*/; do
        [ -f "$plugin/pyproject.toml" ] && "${PIP[@]}" -e "$plugin"
    done
else
    "${PIP[@]}" -e .
fi
echo "portagpt is set up in .venv ($(.venv/bin/python -c 'import torch, portagpt; print("torch", torch.__version__, "| portagpt", portagpt.__version__)'))"
