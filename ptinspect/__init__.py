"""ptinspect: a live kernel page-table inspector (x86-64, arm64, riscv64).

The one import name the package installs. The repository keeps its code in `inspector/` (the core),
`archs/` (architecture facts as data) and `commands/` (the CLI and the gdb extension); they are
`ptinspect.inspector`, `ptinspect.archs` and `ptinspect.commands` here. The Python API
(`ptinspect.inspector.api`) is re-exported lazily, so that the CLI does not pay for it at start-up.
"""
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("ptinspect")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    """Resolve the API's public names on first use (PEP 562)."""
    api = import_module("ptinspect.inspector.api")
    if name in getattr(api, "__all__", ()):
        return getattr(api, name)
    raise AttributeError(f"module 'ptinspect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *getattr(import_module("ptinspect.inspector.api"), "__all__", ())])
