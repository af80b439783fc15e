"""A tool is a pydantic model (its arguments) plus an async handler. Our code runs it, never the model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from bot.store import Store


class ToolError(Exception):
    """A handler's failure; its message becomes the tool's error result."""


@dataclass(frozen=True)
class ToolContext:
    thread_id: str
    call_id: str
    data_dir: Path
    user: str | None = None
    store: Store | None = None  # read access to the threads, for tools that report on them
    # environment variables of the channels' secrets (`Runtime.secret_env`): kept from commands
    secret_env: frozenset[str] = frozenset()


Handler = Callable[[Any, ToolContext], Awaitable[str]]


def never(_args: Any) -> bool:
    """The approval policy of a tool that never needs one."""
    return False


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    handler: Handler
    # whether a call needs a human's approval; may look at the validated arguments
    needs_approval: Callable[[Any], bool] = never
    command: tuple[str, ...] = ()  # runbook tools: the argv template, for `chatops doctor`
    about: str = ""  # MCP tools: server, tool, description and annotations, shown to approvers
    # False only where another schema decides which keys exist (an MCP server's inputSchema): what
    # it accepts is kept, shown and run, never dropped
    strict: bool = True

    def __post_init__(self) -> None:
        # Extra keys are refused, never dropped: an approver must see exactly what will run, and
        # "dry_run: true" beside the real arguments would be a lie the run silently ignores.
        if self.strict:
            object.__setattr__(self, "args", strict_args(self.args))

    @property
    def gated(self) -> bool:
        """Whether some call of this tool may need an approval."""
        return self.needs_approval is not never

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        return self.args.model_validate(raw)

    def exact(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The validated arguments as data: what an approval shows and what runs."""
        return self.validate(raw).model_dump(mode="json")

    def schema(self) -> dict[str, Any]:
        """The tool as the Messages API wants it."""
        return dict(_schema(self.name, self.description, self.args))

    @property
    def fields(self) -> list[str]:
        return list(self.args.model_fields)


@lru_cache(maxsize=1024)
def strict_args(args: type[BaseModel]) -> type[BaseModel]:
    """`args` with extra keys forbidden (itself if it already forbids them)."""
    if args.model_config.get("extra") == "forbid":
        return args
    return type(args.__name__, (args,), {"model_config": ConfigDict(extra="forbid"),
                                         "__module__": args.__module__, "__doc__": args.__doc__})


@lru_cache(maxsize=1024)
def _schema(name: str, description: str, args: type[BaseModel]) -> dict[str, Any]:
    # generating a JSON schema costs about 0.2 ms per tool, on every model call otherwise
    schema = args.model_json_schema()
    schema.pop("title", None)
    return {"name": name, "description": description, "input_schema": schema}


ERRORS_SHOWN = 5  # bad fields named in a validation error; the rest are counted
NAME_LIMIT = 60  # characters of a field name in it (the model may invent huge ones)


def compact_validation_error(tool: str, exc: ValidationError) -> str:
    """A short, model-readable error: one line per bad field (the first few), no pydantic URLs,
    no values."""
    errors = exc.errors(include_url=False)
    lines = []
    for err in errors[:ERRORS_SHOWN]:
        where = ".".join(str(p)[:NAME_LIMIT] for p in err["loc"]) or "arguments"
        msg = "unknown argument, not allowed" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: {msg}")
    more = f"; and {len(errors) - ERRORS_SHOWN} more" if len(errors) > ERRORS_SHOWN else ""
    return f"invalid arguments for {tool}: " + "; ".join(lines) + more


# ---- the built-in tool every agent has: asking a human -------------------------------------

class AskHumanArgs(BaseModel):
    question: str = Field(min_length=1, description="What you need the human to tell you.")


async def _never_called(_args: AskHumanArgs, _ctx: ToolContext) -> str:  # pragma: no cover
    raise ToolError("ask_human is answered by a human, not run")


ASK_HUMAN = Tool(
    name="ask_human",
    description="Ask the humans in this conversation a question and wait for their answer.",
    args=AskHumanArgs,
    handler=_never_called,
)
