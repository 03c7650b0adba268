"""A real browser for the map test: Debian's headless Chromium, the page's DOM after its script
ran, a screenshot, and the colours in that screenshot (a small PNG reader: zlib, no Pillow)."""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

TIMEOUT = 180  # seconds for one headless Chromium run (a loaded 2-core machine; a quiet one takes 2-5 s)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: the map test needs a real browser (bootstrap.sh installs "
                    "Debian's chromium package)")
    return path


def run(args: list[str]) -> str:
    proc = subprocess.run([chromium(), *FLAGS, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dump_dom(page: Path, fragment: str = "") -> str:
    """The page's DOM after its script ran."""
    return run(["--dump-dom", page.as_uri() + fragment])


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1400, 1000), fragment: str = "") -> bytes:
    run([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page.as_uri() + fragment])
    return png.read_bytes()


@dataclass(frozen=True)
class Element:
    tag: str
    attrs: dict[str, str]

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def elements(dom: str) -> list[Element]:
    parser = _Collector()
    parser.feed(dom)
    return parser.elements


def png_colours(data: bytes) -> dict[tuple[int, int, int], int]:
    """Pixel count per RGB colour of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and not interlace, header
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    counts: dict[tuple[int, int, int], int] = {}
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif kind == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif kind == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        for x in range(0, stride, bpp):
            key = (cur[x], cur[x + 1], cur[x + 2])
            counts[key] = counts.get(key, 0) + 1
        prev = cur
    return counts
