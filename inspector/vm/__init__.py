"""Test machines: Debian kernels fetched through a private apt state, booted under QEMU."""
from __future__ import annotations

import sys


class VMError(RuntimeError):
    """A failure the user can act on (missing tool, failed download, kernel that does not boot)."""


def progress(message: str) -> None:
    """Print one progress line to stderr."""
    print(f"ptinspect: {message}", file=sys.stderr, flush=True)
