"""A minimal QMP client (QEMU's JSON monitor on a unix socket), every call bounded by a timeout."""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any


class QmpError(RuntimeError):
    """QMP could not be reached or answered with an error."""


class Qmp:
    """One QMP session: greeting read and capabilities negotiated on connect."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.buffer = b""
        try:
            self.sock.connect(path)
            self._read()  # greeting
            self.execute("qmp_capabilities")
        except (OSError, QmpError) as exc:
            self.sock.close()
            raise QmpError(f"QMP at {path}: {exc}") from None

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QmpError("connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run COMMAND and return its "return" value (asynchronous events are skipped)."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = self._read()
                if "return" in reply:
                    return reply["return"]
                if "error" in reply:
                    raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
        except OSError as exc:
            raise QmpError(f"{command}: {exc}") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for_qmp(path: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> Qmp:
    """Connect to QMP at PATH, retrying until TIMEOUT s pass or ALIVE() turns false."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Qmp(path)
        except QmpError as exc:
            if time.monotonic() > deadline or not alive():
                raise QmpError(f"QMP at {path} not reachable: {exc}") from None
        time.sleep(0.1)
