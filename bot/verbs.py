"""A channel's own `chatops` verbs (the email channel's `smtp`, the schedules' `clock`): the CLI
adds the verbs of each channel in the wiring to its parser, so the core names none of them and a
channel that is not wired has no verb."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bot.runtime import Runtime

Run = Callable[["Runtime", argparse.Namespace], Awaitable[int]]  # the exit status


def no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Verb:
    name: str
    help: str  # also its description: every verb describes itself
    run: Run
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments  # each with its help
    # it runs a worker or a channel (model client, renderers); the others only read and append
    # to Redis, and skip those imports
    serving: bool = False
    # a sub-command of `group` (name, help), e.g. ("schedules", "list schedules, fire one now")
    group: tuple[str, str] | None = None


@runtime_checkable
class HasVerbs(Protocol):
    """A channel with verbs of its own."""

    def verbs(self) -> Sequence[Verb]: ...


def as_user(parser: argparse.ArgumentParser, what: str) -> None:
    """`--as USER`: who runs the verb, by default the login name."""
    parser.add_argument("--as", dest="user", metavar="USER", default=getpass.getuser(),
                        help=f"{what} (default: your login name, {getpass.getuser()})")
