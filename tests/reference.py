"""The U-Net as first written now lives in the package: :func:`aqsep.fastforms.plain_forward`.

Kept as a name for older callers of ``reference.textbook_forward``.
"""

from __future__ import annotations

from aqsep.fastforms import plain_forward as textbook_forward

__all__ = ["textbook_forward"]
