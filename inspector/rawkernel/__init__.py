"""Kernel introspection: kernel memory read through a cached KernelLayout.

Release, facts, RAM, tasks, mm and VMAs, answered by reading the kernel's own
structures at the offsets the vmlinux's DWARF gave once (inspector/layout.py);
VMAs are named as /proc/PID/maps names them.  Answers
are plain data.  Every read failure and every structure that cannot be what
the kernel builds (a cycle, an unknown node type, a bound exceeded) raises
KernelError naming what was being read.  Results are cached per instance: a
RawKernel describes one stopped kernel.

One module per kernel subsystem, as drgn's helpers: memory.py (reads, strings, structure members),
facts.py (release, facts), memblock.py (RAM), tasks.py (tasks, mm, pgd), maple.py (the maple tree),
vmas.py (VMAs from the maple tree or the mmap list, and their names), paths.py (d_path),
modules.py (loaded modules' symbols and ORC tables).
RawKernel is all of them.
"""
from __future__ import annotations

from .memblock import Memblock
from .memory import SOURCE, ReadVa
from .modules import LoadedModule, Modules
from .tasks import Task, Tasks
from .vmas import Vmas

__all__ = ["SOURCE", "LoadedModule", "RawKernel", "ReadVa", "Task"]


class RawKernel(Vmas, Tasks, Memblock, Modules):
    """Questions about a kernel, answered from its memory and a KernelLayout."""
