"""A target served by another process over a pair of pipes.

The gdb extension runs each `pt` command as a ptinspect child process (gdb's
embedded Python cannot host drgn: both link elfutils) and serves the child's
reads from gdb's own connection.  Requests are JSON lines; replies are a
4-byte length, a status byte, then the payload.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import BinaryIO

ENV = "PTINSPECT_PIPE_TARGET"  # "READ_FD,WRITE_FD" of the child's ends


class PipeError(Exception):
    """The serving process failed a request."""


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise PipeError("the serving process went away")
    return data


class PipeTarget:
    """The child side: a target whose every request goes to the serving process."""

    def __init__(self, spec: str) -> None:
        rfd, wfd = (int(x) for x in spec.split(","))
        self._in = os.fdopen(rfd, "rb", buffering=0)
        self._out = os.fdopen(wfd, "wb", buffering=0)
        info = json.loads(self._call({"op": "info"}))
        self.arch: str = info["arch"]
        self.source: str = info["source"]
        self._ram: list[tuple[int, int]] | None = None

    def _call(self, request: dict) -> bytes:
        self._out.write(json.dumps(request).encode() + b"\n")
        length, status = struct.unpack("<IB", _read_exact(self._in, 5))
        payload = _read_exact(self._in, length)
        if status:
            raise PipeError(payload.decode(errors="replace"))
        return payload

    def read(self, pa: int, size: int) -> bytes:
        return self._call({"op": "read", "pa": pa, "size": size})

    def read_registers(self) -> dict[str, int]:
        return {k: int(v) for k, v in json.loads(self._call({"op": "registers"})).items()}

    def set_ram(self, ranges: list[tuple[int, int]]) -> None:
        self._ram = ranges

    def ranges(self) -> list[tuple[int, int]]:
        return self._ram if self._ram is not None else [(0, 1 << 52)]

    @property
    def ram_known(self) -> bool:
        """Whether ranges() states the target's RAM (else reads outside it may give zeros)."""
        return self._ram is not None

    def close(self) -> None:
        for f in (self._out, self._in):
            f.close()


def serve(requests: BinaryIO, replies: BinaryIO, target, errors: tuple[type[Exception], ...]) -> None:
    """The serving side: answer a child's requests until it closes its end."""
    handlers: dict[str, Callable[[dict], bytes]] = {
        "info": lambda r: json.dumps({"arch": target.arch, "source": target.source}).encode(),
        "read": lambda r: target.read(r["pa"], r["size"]),
        "registers": lambda r: json.dumps(target.read_registers()).encode(),
    }
    for line in requests:
        request = json.loads(line)
        try:
            payload, status = handlers[request["op"]](request), 0
        except errors as exc:
            payload, status = str(exc).encode(), 1
        replies.write(struct.pack("<IB", len(payload), status) + payload)
        replies.flush()
