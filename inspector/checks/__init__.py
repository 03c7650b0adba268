"""The named rules `ptinspect validate` checks a walked snapshot against."""
from __future__ import annotations

from . import bits, blocks, kernel, model, softleaf, tree, vma
from .base import Check, Context, Finding

CHECKS: tuple[Check, ...] = (
    *bits.CHECKS, *blocks.CHECKS, *tree.CHECKS, *softleaf.CHECKS, *vma.CHECKS, *kernel.CHECKS, *model.CHECKS,
)

__all__ = ["CHECKS", "Check", "Context", "Finding"]
