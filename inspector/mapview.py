"""A picture of an address space: one self-contained HTML page (inline SVG, a little JS, no
external assets) with one row per VMA, each range coloured by mapping size and kind.

The page is built from the walk's bulk form: adjacent entries of one category (mapping size, or
kind) in one row merge into a segment whatever their frames, so a 1 GiB run of base pages is one
rectangle.  Every row is in the static SVG with its range as data attributes (readable without
JS); the script adds the zoomable detail view, down to the entries of one table.
"""
from __future__ import annotations

import bisect
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptinspect.archs.common import Kind, PagingMode

from .diff import Delta
from .dump import Row, RunRows
from .kernel import VM_HUGETLB, Vma
from .summary import kind_label, size_class

# Colours by category class (Tableau 10 and neighbours: distinguishable, printable).
COLOURS = {
    "base": "#4e79a7", "cont": "#59a14f", "contpmd": "#8cd17d", "pmd": "#f28e2b", "pud": "#e15759",
    "p4d": "#b07aa1", "pgd": "#b07aa1", "swap": "#9c755f", "migration": "#edc948", "device": "#76b7b2",
    "hwpoison": "#000000", "marker guard": "#bab0ac", "marker uffd-wp": "#ff9da7", "marker poison": "#7f3c8d",
    "marker": "#d4a6c8", "swapin-error": "#d37295", "unknown": "#ff00ff",
}
CLUSTER_GAP = 1 << 30  # entries outside VMAs further apart than this are drawn in rows of their own
STATUS_COLOURS = {"added": "#2ca02c", "removed": "#d62728", "changed": "#ff7f0e"}


@dataclass
class Segment:
    """Adjacent entries of one category: [start, end), `count` entries of `unit` bytes each
    (a contiguous block's size for contpte/Svnapot, else the entry's span)."""

    start: int
    end: int
    cat: str
    unit: int
    count: int


@dataclass
class MapRow:
    """One row of the picture: a VMA, or the entries outside VMAs under one root-table slot."""

    start: int
    end: int
    label: str
    perms: str
    kind: str  # "vma" | "outside"
    segments: list[Segment] = field(default_factory=list)


@dataclass
class MapModel:
    mode: PagingMode
    rows: list[MapRow]
    categories: dict[str, dict[str, Any]]  # cat -> {"colour", "class", "bytes", "entries"}
    deltas: list[Delta] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def category_class(cat: str, mode: PagingMode) -> str:
    """The colour class of a category label ("pte 4K" -> base, "contpte 64K" -> cont, "swap" -> swap)."""
    if cat in COLOURS:
        return cat
    first = cat.split(" ")[0]
    if first == mode.levels[-1].name:
        return "base"
    if first in ("contpte", "napot"):
        return "cont"
    if first in COLOURS:
        return first
    for prefix in ("migration", "device", "marker"):
        if cat.startswith(prefix):
            return prefix
    return "unknown"


class _Builder:
    def __init__(self, mode: PagingMode, vmas: Sequence[Vma]) -> None:
        self.mode = mode
        self.last = len(mode.levels) - 1
        self.rows = [MapRow(v.start, v.end, v.name + (" [hugetlb]" if v.flags & VM_HUGETLB else ""), v.perms, "vma")
                     for v in sorted(vmas, key=lambda v: v.start)]
        self.starts = [r.start for r in self.rows]
        self.outside: dict[int, MapRow] = {}  # root slot -> row
        self.outside_spans: dict[int, list[tuple[int, int]]] = {}  # root slot -> deltas drawn there
        self.categories: dict[str, dict[str, Any]] = {}

    def row_of(self, va: int) -> MapRow:
        i = bisect.bisect_right(self.starts, va) - 1
        if i >= 0 and va < self.rows[i].end:
            return self.rows[i]
        top = self.mode.levels[0]
        slot = va >> top.shift
        row = self.outside.get(slot)
        if row is None:
            base = slot << top.shift
            label = "outside VMAs" if self.rows else "no VMA list"
            row = self.outside[slot] = MapRow(base, base + top.span, f"{label}, {top.name}[{slot & (top.entries - 1)}]",
                                              "", "outside")
        return row

    def add(self, start: int, size: int, count: int, cat: str, unit: int) -> None:
        c = self.categories.get(cat)
        if c is None:
            cls = category_class(cat, self.mode)
            c = self.categories[cat] = {"class": cls, "colour": COLOURS[cls], "bytes": 0, "entries": 0}
        c["bytes"] += size * count
        c["entries"] += count
        row = self.row_of(start)
        end = start + size * count
        segs = row.segments
        if segs and segs[-1].end == start and segs[-1].cat == cat and segs[-1].unit == unit:
            segs[-1].end = end
            segs[-1].count += count
        else:
            segs.append(Segment(start, end, cat, unit, count))

    def run(self, item: RunRows) -> None:
        run = item.run
        cat, unit, _ = size_class(run.level, run.span, run.template)
        slots = run.slots
        if slots[-1] - slots[0] + 1 == len(slots):  # no holes: one stretch
            self.add(run.va(slots[0]), run.span, len(slots), cat, unit)
            return
        first = prev = slots[0]
        for s in slots[1:]:
            if s != prev + 1:
                self.add(run.va(first), run.span, prev - first + 1, cat, unit)
                first = s
            prev = s
        self.add(run.va(first), run.span, prev - first + 1, cat, unit)

    def row(self, row: Row) -> None:
        e = row.entry
        if e.kind is Kind.TABLE:
            return
        if e.kind is Kind.PRESENT:
            cat, unit, _ = size_class(e.ref.level, e.size, e.hw)
        else:
            cat, unit = kind_label(e.hw), e.size
        self.add(e.va, e.size, 1, cat, unit)

    def tight(self) -> list[MapRow]:
        """The rows outside VMAs cut to what they hold: one row per cluster of segments (and deltas)
        whose gaps are below CLUSTER_GAP, its ends rounded out to one last-level table's span."""
        table = self.mode.levels[-1].span * self.mode.levels[-1].entries
        out = []
        for slot, row in self.outside.items():
            spans = sorted([(s.start, s.end) for s in row.segments] + self.outside_spans.get(slot, []))
            clusters: list[list[int]] = []
            for start, end in spans:
                if clusters and start - clusters[-1][1] <= CLUSTER_GAP:
                    clusters[-1][1] = max(clusters[-1][1], end)
                else:
                    clusters.append([start, end])
            for start, end in clusters:
                lo, hi = max(row.start, start // table * table), min(row.end, -(-end // table) * table)
                out.append(MapRow(lo, hi, row.label, "", "outside",
                                  [s for s in row.segments if lo <= s.start < hi]))
        return out

    def model(self) -> MapModel:
        rows = sorted([*self.rows, *self.tight()], key=lambda r: (r.start, r.kind))
        return MapModel(self.mode, rows, self.categories)


def build(items: Iterable[Row | RunRows], mode: PagingMode, vmas: Sequence[Vma],
          deltas: Sequence[Delta] = ()) -> MapModel:
    """The picture's model of a walk (dump.bulk_rows, or a snapshot's rows); `deltas` (a diff)
    are drawn over it, and rows are made for deltas that lie outside every row."""
    b = _Builder(mode, vmas)
    for item in items:
        if type(item) is RunRows:
            b.run(item)
        else:
            b.row(item)
    for d in deltas:
        b.row_of(d.start)  # a range removed with its VMA still gets a row
        b.outside_spans.setdefault(d.start >> mode.levels[0].shift, []).append((d.start, d.end))
    m = b.model()
    m.deltas = list(deltas)
    return m


def _hx(v: int) -> str:
    return f"{v:#x}"


def human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            v = size / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{size} B"


LABEL_W, BAR_W, ROW_H, BAR_H, GAP_H = 420, 900, 22, 14, 14


def _overview(model: MapModel) -> tuple[str, int]:
    """The static SVG of every row (gaps between rows compressed to a line), and its height."""
    out: list[str] = []
    y = 4
    prev_end: int | None = None
    by_row: dict[int, list[Delta]] = {}
    starts = [r.start for r in model.rows]
    for d in model.deltas:
        i = bisect.bisect_right(starts, d.start) - 1
        while 0 <= i < len(model.rows) and model.rows[i].start < d.end:
            if model.rows[i].end > d.start:
                by_row.setdefault(i, []).append(d)
            i += 1
    for i, r in enumerate(model.rows):
        if prev_end is not None and r.start > prev_end:
            out.append(f'<g class="gap" data-start="{_hx(prev_end)}" data-end="{_hx(r.start)}">'
                       f'<line x1="{LABEL_W}" x2="{LABEL_W + BAR_W}" y1="{y + 5}" y2="{y + 5}" class="gapline"/>'
                       f'<text x="{LABEL_W - 6}" y="{y + 9}" text-anchor="end" class="gaptext">'
                       f'gap {human(r.start - prev_end)}</text></g>')
            y += GAP_H
        prev_end = max(prev_end or 0, r.end)
        span = r.end - r.start
        scale = BAR_W / span
        label = f"{r.start:#014x}-{r.end:#014x} {r.perms} {r.label}"
        out.append(f'<g class="{r.kind} row" data-row="{i}" data-start="{_hx(r.start)}" data-end="{_hx(r.end)}" '
                   f'data-name="{html.escape(r.label)}" data-perms="{r.perms}" transform="translate(0,{y})">'
                   f'<title>{html.escape(label)} ({human(span)})</title>'
                   f'<text x="4" y="{BAR_H - 3}" class="label">{html.escape(label[:60])}</text>'
                   f'<rect class="bg" x="{LABEL_W}" y="0" width="{BAR_W}" height="{BAR_H}"/>')
        for s in r.segments:
            x = LABEL_W + (s.start - r.start) * scale
            w = max((s.end - s.start) * scale, 1.0)
            colour = model.categories[s.cat]["colour"]
            out.append(f'<rect class="seg" data-cat="{s.cat}" data-start="{_hx(s.start)}" data-end="{_hx(s.end)}" '
                       f'data-entries="{s.count}" x="{x:.2f}" y="0" width="{w:.2f}" height="{BAR_H}" '
                       f'fill="{colour}"><title>{s.cat}: {_hx(s.start)}-{_hx(s.end)}, {s.count} entries '
                       f'({human(s.end - s.start)})</title></rect>')
        for d in by_row.get(i, ()):
            x = LABEL_W + (max(d.start, r.start) - r.start) * scale
            w = max((min(d.end, r.end) - max(d.start, r.start)) * scale, 2.0)
            out.append(f'<rect class="delta" data-status="{d.status}" data-start="{_hx(d.start)}" '
                       f'data-end="{_hx(d.end)}" data-level="{d.level}" data-change="{html.escape(d.text)}" '
                       f'x="{x:.2f}" y="-2" width="{w:.2f}" height="{BAR_H + 4}" '
                       f'stroke="{STATUS_COLOURS[d.status]}"><title>{d.status} {d.level} {_hx(d.start)}-'
                       f'{_hx(d.end)}: {html.escape(d.text)}</title></rect>')
        out.append("</g>")
        y += ROW_H
    return "\n".join(out), y + 4


def _data(model: MapModel) -> dict[str, Any]:
    """What the script needs for the detail view (addresses as hex strings: JS numbers hold 53 bits)."""
    return {
        "pageSize": model.mode.page_size,
        "tableSpan": model.mode.levels[-1].span * model.mode.levels[-1].entries,
        "rows": [{"start": _hx(r.start), "end": _hx(r.end), "label": r.label, "perms": r.perms,
                  "segs": [[_hx(s.start), _hx(s.end), s.cat, _hx(s.unit), s.count] for s in r.segments]}
                 for r in model.rows],
        "colours": {k: v["colour"] for k, v in model.categories.items()},
        "deltas": [[_hx(d.start), _hx(d.end), d.status, d.level, d.text] for d in model.deltas],
        "statusColours": STATUS_COLOURS,
    }


def render(model: MapModel, title: str, info: Sequence[str]) -> str:
    """The self-contained HTML page."""
    svg, height = _overview(model)
    legend = "".join(
        f'<span class="key" data-cat="{html.escape(cat)}"><i style="background:{c["colour"]}"></i>{html.escape(cat)}'
        f' <small>{human(c["bytes"])}, {c["entries"]} entries</small></span>'
        for cat, c in sorted(model.categories.items(), key=lambda kv: (list(COLOURS).index(kv[1]["class"]), kv[0])))
    if model.deltas:
        legend += "".join(f'<span class="key"><i class="ring" style="border-color:{c}"></i>{s}</span>'
                          for s, c in STATUS_COLOURS.items())
    data = json.dumps(_data(model)).replace("</", "<\\/")
    lines = "".join(f"<div>{html.escape(t)}</div>" for t in [*info, *model.notes])
    return TEMPLATE.format(title=html.escape(title), info=lines, legend=legend, svg=svg, height=height,
                           width=LABEL_W + BAR_W + 16, data=data, script=SCRIPT)


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 12px; color: #222; background: #fff; }}
h1 {{ font-size: 16px; margin: 0 0 4px; }}
#info {{ color: #555; margin-bottom: 6px; }}
#legend .key {{ display: inline-block; margin: 2px 12px 2px 0; }}
#legend i {{ display: inline-block; width: 14px; height: 12px; vertical-align: -1px; margin-right: 4px; }}
#legend i.ring {{ border: 2px solid; box-sizing: border-box; }}
svg text {{ font: 11px ui-monospace, monospace; fill: #222; }}
.bg {{ fill: #f3f3f3; }}
.row {{ cursor: pointer; }}
.row:hover .bg, .row.selected .bg {{ fill: #dde6f3; }}
.gapline {{ stroke: #999; stroke-dasharray: 3 3; }}
.gaptext {{ fill: #888 !important; font-size: 10px !important; }}
.delta {{ fill: none; stroke-width: 2; }}
#detail {{ border: 1px solid #ccc; margin: 8px 0; padding: 6px; }}
#controls button {{ margin-right: 4px; }}
#status {{ font: 12px ui-monospace, monospace; min-height: 16px; color: #333; }}
.dlist {{ font: 12px ui-monospace, monospace; cursor: pointer; }}
</style></head><body>
<h1>{title}</h1>
<div id="info">{info}</div>
<div id="legend">{legend}</div>
<div id="detail">
 <div id="controls"><b id="dtitle">click a row to zoom into it</b><br>
  <button id="zout" title="zoom out">&minus;</button><button id="zin" title="zoom in">+</button>
  <button id="left" title="pan left">&larr;</button><button id="right" title="pan right">&rarr;</button>
  <button id="fit">whole row</button><button id="table">one table</button>
  zoom <input id="scale" type="range" min="0" max="1000" value="0" style="width:300px">
  <span id="window"></span></div>
 <svg id="dsvg" width="{width}" height="70"></svg>
 <div id="status"></div>
 <ol id="deltas"></ol>
</div>
<svg id="overview" width="{width}" height="{height}">
{svg}
</svg>
<script type="application/json" id="mapdata">{data}</script>
<script>{script}</script>
</body></html>
"""

# BigInt keeps 64-bit addresses exact; only pixel positions become floats.
SCRIPT = r"""
(function () {
const D = JSON.parse(document.getElementById('mapdata').textContent);
const NS = 'http://www.w3.org/2000/svg', X0 = 8, W = 1300, H = 34;
const big = s => BigInt(s), hex = v => '0x' + v.toString(16);
const rows = D.rows.map(r => ({ start: big(r.start), end: big(r.end), label: r.label, perms: r.perms,
  segs: r.segs.map(s => ({ start: big(s[0]), end: big(s[1]), cat: s[2], unit: big(s[3]), count: s[4] })) }));
const deltas = D.deltas.map(d => ({ start: big(d[0]), end: big(d[1]), status: d[2], level: d[3], text: d[4] }));
const svg = document.getElementById('dsvg');
let cur = null, lo = 0n, hi = 1n;
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  parent.appendChild(e); return e;
}
function px(va) { return X0 + Number(va - lo) * W / Number(hi - lo); }
function human(n) {
  for (const [u, s] of [['GiB', 30], ['MiB', 20], ['KiB', 10]]) {
    if (n >= 2 ** s) return (n / 2 ** s).toFixed(n % 2 ** s ? 1 : 0) + ' ' + u;
  }
  return n + ' B';
}
function draw() {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!cur) return;
  const span = hi - lo;
  document.getElementById('window').textContent = hex(lo) + ' - ' + hex(hi) + ' (' + human(Number(span)) + ')';
  const slider = document.getElementById('scale');
  const full = Number(cur.end - cur.start), minSpan = D.pageSize * 8;
  slider.value = Math.round(1000 * Math.log(full / Number(span)) / Math.log(Math.max(full / minSpan, 2)));
  el('rect', { x: X0, y: 4, width: W, height: H, fill: '#f3f3f3' }, svg);
  let lines = 0;
  for (const s of cur.segs) {
    if (s.end <= lo || s.start >= hi) continue;
    const a = s.start < lo ? lo : s.start, b = s.end > hi ? hi : s.end;
    const x = px(a), w = Math.max(px(b) - x, 1);
    const r = el('rect', { x: x, y: 4, width: w, height: H, fill: D.colours[s.cat], class: 'dseg',
      'data-cat': s.cat }, svg);
    const each = Number((s.end - s.start) / BigInt(s.count));
    r.addEventListener('mousemove', () => { document.getElementById('status').textContent =
      s.cat + ': ' + hex(s.start) + '-' + hex(s.end) + ', ' + s.count + ' entries of ' + human(each) +
      (BigInt(each) !== s.unit ? ' in ' + human(Number(s.unit)) + ' blocks' : ''); });
    // entry boundaries (thin), then contiguous-block boundaries (thick), once far enough apart
    for (const [step, width] of [[BigInt(each), 1], [s.unit, 3]]) {
      if (step === BigInt(each) && width === 3) continue;
      if (Number(step) * W / Number(span) < 4) continue;
      for (let v = a - (a - s.start) % step; v <= b && lines < 6000; v += step, lines++) {
        if (v > lo) el('line', { x1: px(v), x2: px(v), y1: 4, y2: 4 + H, stroke: '#fff', 'stroke-width': width }, svg);
      }
    }
  }
  const t = BigInt(D.tableSpan);  // one last-level table's span: table boundaries
  if (span / t <= 64n) {
    for (let v = lo - lo % t + t; v < hi; v += t) {
      el('line', { x1: px(v), x2: px(v), y1: 0, y2: H + 8, stroke: '#333', 'stroke-dasharray': '2 2' }, svg);
      el('text', { x: px(v) + 2, y: H + 20 }, svg).textContent = hex(v);
    }
  }
  for (const d of deltas) {
    if (d.end <= lo || d.start >= hi) continue;
    const a = d.start < lo ? lo : d.start, b = d.end > hi ? hi : d.end;
    el('rect', { x: px(a), y: 2, width: Math.max(px(b) - px(a), 2), height: H + 4, fill: 'none',
      stroke: D.statusColours[d.status], 'stroke-width': 2, class: 'ddelta' }, svg)
      .appendChild(document.createElementNS(NS, 'title')).textContent = d.status + ' ' + d.level + ': ' + d.text;
  }
  el('text', { x: X0, y: H + 32 }, svg).textContent = hex(lo);
  el('text', { x: X0 + W, y: H + 32, 'text-anchor': 'end' }, svg).textContent = hex(hi);
}
function setWindow(a, b) {
  const minSpan = BigInt(D.pageSize * 8);
  if (b - a < minSpan) { const c = (a + b) / 2n; a = c - minSpan / 2n; b = a + minSpan; }
  if (a < cur.start) { b += cur.start - a; a = cur.start; }
  if (b > cur.end) { a -= b - cur.end; b = cur.end; }
  if (a < cur.start) a = cur.start;
  lo = a; hi = b; draw();
}
function zoom(f, at) {  // f < 1 zooms in; `at` the fixed point
  const span = hi - lo, c = at === undefined ? lo + span / 2n : at;
  const ns = BigInt(Math.max(1, Math.round(Number(span) * f)));
  const a = c - BigInt(Math.round(Number(c - lo) * f));
  setWindow(a, a + ns);
}
function select(i) {
  document.querySelectorAll('#overview .row.selected').forEach(e => e.classList.remove('selected'));
  const g = document.querySelector('#overview .row[data-row="' + i + '"]');
  if (g) g.classList.add('selected');
  cur = rows[i];
  document.getElementById('dtitle').textContent =
    hex(cur.start) + '-' + hex(cur.end) + ' ' + cur.perms + ' ' + cur.label;
  setWindow(cur.start, cur.end);
}
document.querySelectorAll('#overview .row').forEach(g => g.addEventListener('click', ev => {
  const i = +g.dataset.row; select(i);
  const x = ev.offsetX - 420;  // a click on the bar zooms to one table around that point
  if (x >= 0 && x <= 900) {
    const va = cur.start + BigInt(Math.round(Number(cur.end - cur.start) * x / 900));
    const t = BigInt(D.tableSpan);
    if (cur.end - cur.start > t) setWindow(va - va % t, va - va % t + t);
  }
}));
document.getElementById('zin').onclick = () => cur && zoom(0.5);
document.getElementById('zout').onclick = () => cur && zoom(2);
document.getElementById('left').onclick = () => cur && setWindow(lo - (hi - lo) / 2n, hi - (hi - lo) / 2n);
document.getElementById('right').onclick = () => cur && setWindow(lo + (hi - lo) / 2n, hi + (hi - lo) / 2n);
document.getElementById('fit').onclick = () => cur && setWindow(cur.start, cur.end);
document.getElementById('table').onclick = () => {
  if (!cur) return; const t = BigInt(D.tableSpan), c = lo + (hi - lo) / 2n; setWindow(c - c % t, c - c % t + t); };
document.getElementById('scale').oninput = ev => {
  if (!cur) return;
  const full = Number(cur.end - cur.start), minSpan = D.pageSize * 8;
  const span = full / Math.pow(Math.max(full / minSpan, 2), ev.target.value / 1000);
  const c = lo + (hi - lo) / 2n, h = BigInt(Math.round(span / 2));
  setWindow(c - h, c + h);
};
svg.addEventListener('wheel', ev => {
  if (!cur) return; ev.preventDefault();
  const at = lo + BigInt(Math.round(Number(hi - lo) * Math.min(Math.max((ev.offsetX - X0) / W, 0), 1)));
  zoom(ev.deltaY < 0 ? 0.8 : 1.25, at);
});
let drag = null;
svg.addEventListener('mousedown', ev => { drag = [ev.clientX, lo, hi]; });
window.addEventListener('mouseup', () => { drag = null; });
window.addEventListener('mousemove', ev => {
  if (!drag || !cur) return;
  const d = BigInt(Math.round((drag[0] - ev.clientX) * Number(drag[2] - drag[1]) / W));
  setWindow(drag[1] + d, drag[2] + d);
});
const list = document.getElementById('deltas');
deltas.forEach(d => {  // the changes of a diff, each a link to its place
  const i = rows.findIndex(r => r.start <= d.start && d.start < r.end);
  const li = document.createElement('li');
  li.className = 'dlist';
  li.style.color = D.statusColours[d.status];
  li.textContent = d.status + ' ' + hex(d.start) + '-' + hex(d.end) + ' ' + d.level + ': ' + d.text;
  if (i >= 0) {
    li.onclick = () => { select(i); const pad = (d.end - d.start) / 2n; setWindow(d.start - pad, d.end + pad); };
  }
  list.appendChild(li);
});
const pick = new URLSearchParams(location.search).get('row') ?? location.hash.slice(1);
if (rows.length) select(pick !== '' && pick !== null && rows[+pick] ? +pick : rows.reduce((best, r, i) =>
  r.segs.length > rows[best].segs.length ? i : best, 0));
})();
"""
