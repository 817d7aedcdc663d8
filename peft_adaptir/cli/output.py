"""How much the command line prints. Quiet by default: our own lines, each distinct warning once (as
``warning: ...``) and our progress bar; no library info, progress bars ("Loading weights") or FutureWarnings.
``-v`` adds the libraries' info messages and progress bars, ``-vv`` their debug messages and warning locations.

:func:`cli_output` sets this for the duration of one command and puts everything back afterwards, so calling
``main()`` in a notebook or a test changes nothing for what runs next. Environment variables are set as well as the
libraries' switches, so that libraries imported during the command (datasets is imported only when a run reads
data) start in the same state.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

__all__ = ["add_verbosity_argument", "cli_output"]

_LEVELS = {0: logging.ERROR, 1: logging.INFO, 2: logging.DEBUG}
_LIBRARIES = ("transformers", "datasets", "huggingface_hub", "accelerate", "peft")
_QUIET_ENV = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def add_verbosity_argument(parser: argparse.ArgumentParser, top_level: bool = False) -> argparse.ArgumentParser:
    """``-v`` / ``-vv`` (counted into ``args.verbose``); a sub-command's flag adds to none given before it."""
    if "-v" not in parser._option_string_actions:  # the flag may already be there (another front added it)
        parser.add_argument(
            "-v", "--verbose", action="count", default=0 if top_level else argparse.SUPPRESS,
            help="Print more: -v library messages and progress bars, -vv debug output.",
        )  # fmt: skip
    return parser


def _short_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _library_switches(level: int, quiet: bool) -> Iterator[None]:
    """transformers' and the Hub client's verbosity and progress bars (datasets follows the environment)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    loggers = {name: logging.getLogger(name).level for name in _LIBRARIES}
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    hub_bars_off = are_progress_bars_disabled()
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(level if name != "peft" else min(level, logging.WARNING))
    transformers_logging.set_verbosity(level)
    (transformers_logging.disable_progress_bar if quiet else transformers_logging.enable_progress_bar)()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        for name, old in loggers.items():
            logging.getLogger(name).setLevel(old)
        transformers_logging.set_verbosity(verbosity)
        (transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar)()
        if quiet and not hub_bars_off:
            enable_progress_bars()


@contextmanager
def cli_output(verbosity: int) -> Iterator[None]:
    """The output settings of one command for ``verbosity`` (0, 1 or 2), undone on exit."""
    verbosity = max(0, min(2, int(verbosity)))
    level, quiet = _LEVELS[verbosity], verbosity == 0
    env = {"TRANSFORMERS_VERBOSITY": logging.getLevelName(level).lower()}
    env["DATASETS_VERBOSITY"] = env["TRANSFORMERS_VERBOSITY"]
    with ExitStack() as stack:
        stack.enter_context(_environment({**env, **(_QUIET_ENV if quiet else {})}))
        stack.enter_context(_library_switches(level, quiet))
        if "datasets" in sys.modules:  # already imported: its switches, as the environment says for a later import
            import datasets

            datasets.utils.logging.set_verbosity(level)
            (datasets.disable_progress_bars if quiet else datasets.enable_progress_bars)()
        stack.enter_context(warnings.catch_warnings())
        if quiet:
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("once", category=UserWarning)
            previous_format = warnings.formatwarning
            warnings.formatwarning = _short_warning
            stack.callback(setattr, warnings, "formatwarning", previous_format)
        yield
