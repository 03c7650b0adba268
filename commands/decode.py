"""`ptinspect decode`: what one raw entry value means."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ptinspect.archs import ARCH_NAMES, get_arch
from ptinspect.inspector.records import decoded_record, layout_label

from .options import FORMATS, facts_from, kernel_fact_options
from .render import decoded_table


def parse_raw(text: str) -> int:
    try:
        value = int(text, 0) if text.lower().startswith("0x") else int(text, 16)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a hex value", param_hint="VALUE") from None
    if not 0 <= value < 1 << 64:
        raise click.BadParameter(f"{text!r} does not fit in 64 bits", param_hint="VALUE")
    return value


@click.command()
@click.option("--arch", "arch_name", required=True, type=click.Choice(ARCH_NAMES), help="Architecture.")
@click.option("--mode", "mode_name",
              help="Paging mode (default: x86_64 4-level, arm64 4k-48, riscv64 sv48); see --list-modes.")
@click.option("--level", default="pte", show_default=True,
              type=click.Choice(["pgd", "p4d", "pud", "pmd", "pte"]), help="Level the value was found at.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--list-modes", is_flag=True, help="List the paging modes of --arch and exit.")
@kernel_fact_options
@click.argument("values", nargs=-1)
def decode(arch_name: str, mode_name: str | None, level: str, fmt: str, list_modes: bool,
           kernel: str | None, pin: str | None, configs: tuple[str, ...], config_file: Path | None,
           facts: tuple[str, ...], values: tuple[str, ...]) -> None:
    """Decode raw page-table entry VALUEs (hex) found at --level.

    Example: ptinspect decode --arch arm64 --kernel 7.2 --level pte 0x47c0
    """
    arch = get_arch(arch_name)
    if list_modes:
        for m in arch.modes():
            click.echo(f"{m.name:14} {len(m.levels)} levels, {m.va_bits}-bit VA, "
                       f"{m.page_size >> 10} KiB pages: {' '.join(lvl.name for lvl in m.levels)}")
        return
    if not values:
        raise click.UsageError("give at least one VALUE to decode")
    try:
        mode = arch.mode(mode_name or arch.default_mode)
        depth = mode.level(level)
    except (KeyError, ValueError) as exc:
        raise click.UsageError(str(exc).strip("'\"")) from None
    kfacts = facts_from(arch.name, kernel, configs, config_file, facts, pin)
    decoded = [arch.decode(parse_raw(v), depth, mode, kfacts) for v in values]
    if fmt == "json":
        layout = kfacts.layout
        head = {"arch": arch.name, "mode": mode.name, "kernel": kfacts.release,
                "layout": None if layout is None else layout.name,
                "layout_assumed": None if layout is None else layout.assumed}
        out = [{**head, **decoded_record(d)} for d in decoded]
        click.echo(json.dumps(out if len(out) > 1 else out[0], indent=2))
        return
    click.echo(f"# {arch.name} {mode.name}, kernel layout {layout_label(kfacts)}")
    for i, dec in enumerate(decoded):
        if i:
            click.echo()
        click.echo(decoded_table(dec))
