"""Foreign checkpoint formats: the files people already have, read (and some written) by portagpt.

One module per format, each a :class:`~portagpt.loaders.foreign.ForeignFormat`
registered here (the loaders import this package on first use):

* ``book``: the book's chapter-5 ``model.pth`` with its config dict, both ways;
* ``meta``: Meta's original Llama releases (``params.json``,
  ``consolidated.NN.pth``, ``tokenizer.model``), both ways;
* ``tf``: OpenAI's TensorFlow GPT-2 checkpoints (the ``[tf]`` extra), read.

These modules may name the family they target; ``core/``, ``loaders/`` and
``adapters/`` never do.
"""

from __future__ import annotations

from ..loaders.foreign import register_format
from . import book, meta, tf

for _module in (book, meta, tf):
    register_format(_module.FORMAT)
