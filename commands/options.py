"""Click options shared by the commands that need kernel facts."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ptinspect.archs.common import KernelFacts
from ptinspect.archs.versions import supported_range
from ptinspect.inspector import inputs
from ptinspect.inspector.facts import build_facts

FORMATS = click.Choice(["table", "json"])


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """An input the validation layer (inspector/inputs.py) refuses, as click's usage error naming it."""
    try:
        yield
    except inputs.InputError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.what) from None


class Timeout(click.ParamType):
    """Seconds to wait: a finite, positive number (inspector.inputs.timeout)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = float(value)
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        try:
            return inputs.timeout(seconds)
        except inputs.InputError as exc:
            self.fail(exc.message, param, ctx)


TIMEOUT = Timeout()


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
        "--layout", "pin", metavar="RELEASE",
        help=f"Decode with this release's layout whatever the kernel says ({supported_range()}).",
    )(func)
    func = click.option(
        "--kernel", metavar="RELEASE",
        help=f"The kernel release ({supported_range()}), e.g. 6.12 or 7.3.4+bpo-cloud-amd64; newer "
        "releases are decoded with the newest known layout, and say so.",
    )(func)
    return func


def facts_from(arch: str, kernel: str | None, configs: tuple[str, ...], config_file: Path | None,
               facts: tuple[str, ...], pin: str | None = None) -> KernelFacts:
    try:
        return build_facts(arch, kernel, configs, config_file, facts, pin)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
