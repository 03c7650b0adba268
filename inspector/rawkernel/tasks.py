"""Tasks: every process on init_task.tasks and its threads; a task's mm and an mm's root table."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..kernel import KernelError
from ..layout import KernelLayout
from .memory import KernelMemory, ReadVa, _Fields

MAX_TASKS = 1 << 22  # PID_MAX_LIMIT (include/linux/threads.h)


@dataclass(frozen=True)
class Task:
    """A task_struct: its pid, comm, address and mm (0 for a kernel thread)."""

    pid: int
    comm: str
    address: int
    mm: int


class Tasks(KernelMemory):
    """task_struct lists (include/linux/sched/signal.h for_each_process_thread) and mm->pgd."""

    def __init__(self, layout: KernelLayout, read_va: ReadVa, kaslr_offset: int, arch: str) -> None:
        super().__init__(layout, read_va, kaslr_offset, arch)
        m = layout.members
        (nxt, ptr), prv = m["list_head.next"], m["list_head.prev"][0]
        tasks, thread = m["task_struct.tasks"][0], m["task_struct.thread_node"][0]
        self._task = _Fields("task_struct", {
            "tasks_next": (tasks + nxt, ptr), "thread_next": (thread + nxt, ptr), "thread_prev": (thread + prv, ptr),
            **{n: m[f"task_struct.{n}"] for n in ("pid", "comm", "mm", "signal")}})
        self._tasks: list[Task] | None = None

    def _list_next(self, head: int, what: str) -> int:
        return self._ptr(head + self._member("list_head.next"), f"{what} head")

    def tasks(self) -> list[Task]:
        """Every task but the idle tasks: each process on init_task.tasks and each of its threads
        on signal->thread_head (include/linux/sched/signal.h for_each_process_thread)."""
        if self._tasks is None:
            tasks_off = self._member("task_struct.tasks")
            head = self.symbol("init_task") + tasks_off
            node = self._list_next(head, "init_task.tasks")
            seen = {head}
            out: list[Task] = []
            while node != head:
                if node in seen or len(seen) > MAX_TASKS:
                    raise KernelError(f"init_task.tasks does not return to its head (at {node:#x}, "
                                      f"after {len(seen)} entries)")
                seen.add(node)
                leader = self._task.read_span(self, node - tasks_off)
                out.extend(self._threads(node - tasks_off, leader))
                node = leader[0]["tasks_next"]
            self._tasks = out
        return self._tasks

    def _threads(self, leader: int, read: tuple[dict[str, int], bytes]) -> Iterator[Task]:
        """The threads of a process, the leader's own fields already read."""
        node_off = self._member("task_struct.thread_node")
        fields = read[0]
        if not fields["signal"]:
            raise KernelError(f"task {fields['pid']} at {leader:#x} has no signal_struct")
        head = fields["signal"] + self._member("signal_struct.thread_head")
        what = f"thread list of pid {fields['pid']}"
        # The leader is normally first: its prev is the head, so head->next need not be read.
        node = leader + node_off if fields["thread_prev"] == head else self._list_next(head, what)
        seen = {head}
        while node != head:
            if node in seen or len(seen) > MAX_TASKS:
                raise KernelError(f"{what} does not return to its head (at {node:#x})")
            seen.add(node)
            address = node - node_off
            t, blob = read if address == leader else self._task.read_span(self, address)
            comm = self._task.raw(blob, "comm").split(b"\0", 1)[0].decode(errors="replace")
            yield Task(t["pid"], comm, address, t["mm"])
            node = t["thread_next"]

    def find_task(self, pid: int | None = None, comm: str | None = None) -> Task:
        """The task with a pid (any thread), or the one user task named `comm`."""
        if pid is not None:
            for task in self.tasks():
                if task.pid == pid:
                    return task
            raise KernelError(f"no task with pid {pid}")
        matches = sorted((t for t in self.tasks() if t.comm == comm and t.mm), key=lambda t: t.pid)
        if not matches:
            raise KernelError(f"no user task named {comm!r}")
        if len(matches) > 1:
            pids = ", ".join(str(t.pid) for t in matches)
            raise KernelError(f"{len(matches)} tasks are named {comm!r} (pids {pids}); pick one with --pid")
        return matches[0]

    def task_mm(self, task: Task) -> int:
        """The task's mm_struct address; KernelError for a kernel thread."""
        if not task.mm:
            raise KernelError(f"task {task.pid} ({task.comm}) is a kernel thread: it has no mm")
        return task.mm

    def init_mm(self) -> int:
        return self.symbol("init_mm")

    def pgd(self, mm: int) -> int:
        """mm->pgd: the kernel virtual address of the mm's top-level table."""
        return self._ptr(mm + self._member("mm_struct.pgd"), f"mm_struct.pgd of mm {mm:#x}")
