"""Commands a plugin adds to the ``kiosk`` CLI (``kiosk_commands``), as
datasette's ``register_commands``.

A plugin's command gets the same ``--config`` option and the same exit-code
rules as the core's: return 0 when done; raise :class:`CommandError` for a
one-line error (exit 2 unless it says otherwise).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


class CommandError(Exception):
    """A plugin command's one-line error; ``exit_code`` is what ``kiosk`` exits with."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Command:
    """One ``kiosk NAME`` command.

    - ``arguments(parser)`` adds its arguments to an :class:`argparse.ArgumentParser`;
    - ``run(args)`` does the work and returns the exit code.  ``args.config`` is
      the configuration file's path (a string) and ``args.config_given`` tells
      whether the user named it (``--config`` or ``$KIOSK_CONFIG``).
    """
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
