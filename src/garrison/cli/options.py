"""Options shared by the ``garrison`` subcommands."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from garrison.config import CONFIG_FILE

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_DATA_DIR = Path("garrison-data")


# Where `garrison --config X <command>` leaves X for the command (click's meta is shared by
# every context of one invocation).
CONFIG_META = "garrison.config"


def _default_config() -> Path:
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(CONFIG_META) if ctx is not None else None
    if isinstance(given, Path):
        return given
    return Path(os.environ.get("GARRISON_CONFIG", str(DEFAULT_DATA_DIR / CONFIG_FILE)))


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=_default_config,
        show_default="$GARRISON_CONFIG or garrison-data/garrison.toml",
        help="Config file written by `garrison init`.",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
