"""Click options shared by the commands that need kernel facts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from archs.common import KernelFacts
from inspector.facts import build_facts

FORMATS = click.Choice(["table", "json"])


def kernel_fact_options(func: Callable) -> Callable:
    """--kernel, --config, --config-file and --fact."""
    func = click.option(
        "--fact", "facts", multiple=True, metavar="NAME=VALUE",
        help="A kernel fact, e.g. MAX_SWAPFILES=24, swap_migration_ad_supported=y, MAX_PHYSMEM_BITS=48.",
    )(func)
    func = click.option(
        "--config-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The kernel's .config (or config.gz) to read CONFIG_ options from.",
    )(func)
    func = click.option(
        "--config", "configs", multiple=True, metavar="CONFIG_X=y|n",
        help="A config option that shapes the encoding (CONFIG_MIGRATION, CONFIG_DEVICE_PRIVATE, ...).",
    )(func)
    func = click.option(
        "--kernel", metavar="RELEASE",
        help="Kernel layout family (6.1, 6.12, 7.2) or a release string such as 7.2.13+deb14-cloud-amd64.",
    )(func)
    return func


def facts_from(arch: str, kernel: str | None, configs: tuple[str, ...], config_file: Path | None, facts: tuple[str, ...]) -> KernelFacts:
    try:
        return build_facts(arch, kernel, configs, config_file, facts)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
