"""portagpt-mistral: the Mistral family as a third-party portagpt plugin.

Installed, it registers the ``mistral`` family through the ``portagpt``
entry-point group; nothing in portagpt names it. It is built only from
portagpt's public blocks (``portagpt.adapters``, ``portagpt.core``).
"""

from __future__ import annotations

from .config import MistralConfig
from .model import MistralForCausalLM

__all__ = ["MistralConfig", "MistralForCausalLM"]
