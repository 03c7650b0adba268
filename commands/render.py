"""Human-readable rendering of decoded values and entries."""
from __future__ import annotations

from ptinspect.archs.common import Decoded

# What a softleaf entry's number is, where it is no RAM frame (archs feature device_private_pfn).
PFN_SPACE_NOTE = {"device": " (device-private frame)", "device-offset": " (device-private offset, not a frame)"}


def decoded_rows(dec: Decoded) -> list[tuple[str, str]]:
    """(field, value) rows describing everything a decoded value says."""
    rows: list[tuple[str, str]] = [("raw", f"{dec.raw:#018x}"), ("level", dec.level), ("kind", dec.kind.value)]
    if dec.reason:
        rows.append(("unknown because", dec.reason))
    if dec.size:
        rows.append(("size", human_size(dec.size)))
    if dec.next_table is not None:
        rows.append(("next table", f"{dec.next_table:#x}"))
    if dec.pfn is not None:
        rows.append(("pfn", f"{dec.pfn:#x}" + PFN_SPACE_NOTE.get(dec.pfn_space or "", "")))
    rows.append(("flags", " ".join(dec.flags) or "-"))
    rows.extend(dec.fields)
    if dec.access is not None:
        a = dec.access
        perms = "".join(c if on else "-" for c, on in (("r", a.read), ("w", a.write), ("x", a.exec)))
        rows.append(("access", f"{perms} {'user' if a.user else 'kernel'}"
                     f"{' young' if a.young else ''}{' dirty' if a.dirty else ''}"))
    if dec.softleaf is not None:
        s = dec.softleaf
        rows.append(("softleaf", f"type {s.type} offset {s.offset:#x} (swp_entry_t.val {s.val:#x})"))
        if s.arch_flags:
            rows.append(("softleaf flags", " ".join(s.arch_flags)))
    if dec.markers:
        rows.append(("markers", " ".join(dec.markers)))
    rows.extend(dec.details)
    if dec.cont is not None:
        c = dec.cont
        rows.append(("contiguous", f"{c.scheme}: {c.entries} entries, {human_size(c.size)} block"))
    rows.extend(("note", n) for n in dec.notes)
    return rows


def decoded_table(dec: Decoded) -> str:
    return plain_table(decoded_rows(dec))


def plain_table(rows: list[tuple[str, str]]) -> str:
    """tabulate(rows, tablefmt="plain", disable_numparse=True) for one-line cells, without importing
    tabulate (a quarter of a translate's start-up: it loads importlib.metadata)."""
    cells = [[str(c).strip() for c in row] for row in rows]
    if any("\n" in c for row in cells for c in row):
        from tabulate import tabulate

        return tabulate(rows, tablefmt="plain", disable_numparse=True)
    columns = max(map(len, cells), default=0)
    widths = [max((len(row[i]) for row in cells if i < len(row)), default=0) for i in range(columns)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def human_size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"
