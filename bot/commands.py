"""Exact commands: every tool can be called without the model, e.g. `/deploy api 1.2.3 prod`.

Arguments are `key=value` pairs or positional in the field order of the tool's model; both go
through the same validation and approval policy as a model's call.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.agent import Agent


@dataclass(frozen=True)
class Command:
    tool: str
    args: dict[str, Any]


class CommandError(ValueError):
    pass


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse_command(text: str, agent: Agent) -> Command:
    # a command is its first line: what follows (an email's attachment note, a greeting) is for
    # the agent's context, never arguments
    line = text.strip().splitlines()[0] if text.strip() else ""
    try:
        words = shlex.split(line[1:])
    except ValueError as exc:
        raise CommandError(f"could not read the command: {exc}") from None
    if not words or words[0] == "help":
        raise CommandError(help_text(agent))
    name, rest = words[0], words[1:]
    tool = agent.tool(name)
    if tool is None or tool.name == "ask_human":
        raise CommandError(f"unknown command /{name}.\n{help_text(agent)}")
    fields = tool.fields
    args: dict[str, Any] = {}
    positional = [w for w in rest if "=" not in w]
    if len(positional) > len(fields):
        raise CommandError(f"/{name} takes at most {len(fields)} arguments: {usage(agent, name)}")
    args.update(zip(fields, positional))
    for word in rest:
        if "=" in word:
            key, _, value = word.partition("=")
            if key not in fields:
                raise CommandError(f"/{name} has no argument '{key}': {usage(agent, name)}")
            args[key] = value
    _check_arguments(agent, name, args)
    return Command(name, args)


def _check_arguments(agent: Agent, name: str, args: dict[str, Any]) -> None:
    """Say what is wrong in words a person reads, with the usage line (not pydantic's text)."""
    tool = agent.tool(name)
    assert tool is not None
    try:
        tool.validate(args)
    except ValidationError as exc:
        missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]]
        invalid = [str(e["loc"][0]) for e in exc.errors() if e["type"] != "missing" and e["loc"]]
        properties = tool.args.model_json_schema().get("properties", {})
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        for field in dict.fromkeys(invalid):
            choices = properties.get(field, {}).get("enum")
            hint = f" (one of: {', '.join(map(str, choices))})" if choices else ""
            problems.append(f"{field} {str(args.get(field, ''))[:60]!r} is not valid{hint}")
        raise CommandError(f"/{name}: {'; '.join(problems)}.\nusage: {usage(agent, name)}") from None


def usage(agent: Agent, name: str) -> str:
    tool = agent.tool(name)
    assert tool is not None
    return f"/{name} " + " ".join(f"<{f}>" for f in tool.fields)


def help_text(agent: Agent) -> str:
    lines = [f"Commands of the {agent.name} agent:"]
    for tool in agent.tools:
        lines.append(f"  {usage(agent, tool.name)}  {tool.description}")
    return "\n".join(lines)
