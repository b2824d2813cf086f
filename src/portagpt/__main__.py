"""``python -m portagpt`` works like the ``portagpt`` command (and under torchrun)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
