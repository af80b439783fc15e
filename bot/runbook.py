"""The runbook tool kind: run a configured command, never through a shell.

The command is an argv list; `{field}` placeholders are filled from the validated arguments, one
list element at a time, so an argument can never become a second argument or a shell word.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
)

from bot.policy import Policy, RunbookArg, RunbookSpec
from bot.settings import Settings, secret_env_names
from bot.tools import Tool, ToolContext, ToolError, never


def runbook_tool(
    name: str,
    description: str,
    args: type[BaseModel],
    command: list[str],
    *,
    policy: Policy,
    timeout: float = 120.0,
    needs_approval: Callable[[Any], bool] = never,
) -> Tool:
    """A tool whose handler runs `command` (or the policy's `tools.<name>.command`)."""
    configured = policy.tool(name)
    argv_template = configured.command or command
    limit = configured.timeout or timeout

    async def handler(values: BaseModel, ctx: ToolContext) -> str:
        fields = {k: str(v) for k, v in values.model_dump().items()}
        argv = [part.format_map(fields) for part in argv_template]
        return await run_command(argv, limit, ctx)

    return Tool(name, description, args, handler, needs_approval, tuple(argv_template))


OUTPUT_LIMIT = 1 << 20  # bytes of a command's output kept in its event (head and tail)
_MAY_HOLD_SECRETS = ("REDIS_URL",)  # redis://:password@host


_CORE_SECRETS = secret_env_names(Settings) | set(_MAY_HOLD_SECRETS)


def command_env(ctx: ToolContext) -> dict[str, str]:
    """The runbook's environment: ours, minus the bot's secrets (a deploy script has no business
    with the Slack token or the model key, and its output lands in the thread): the core's
    SecretStr settings and those of every channel (`ctx.secret_env`)."""
    hidden = _CORE_SECRETS | ctx.secret_env
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update(CHATOPS_DATA_DIR=str(ctx.data_dir), CHATOPS_THREAD=ctx.thread_id)
    return env


async def run_command(argv: list[str], timeout: float, ctx: ToolContext) -> str:
    env = command_env(ctx)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError(f"could not start {argv[0]}: {exc.strerror or exc}") from None
    try:
        out = await asyncio.wait_for(_output(proc), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc.pid)  # the command's own children too: it leads its own session
        await proc.wait()
        raise ToolError(f"{argv[0]} timed out after {timeout:g}s") from None
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ToolError(f"exit status {proc.returncode}: {text}")
    return text


async def _output(proc: asyncio.subprocess.Process) -> bytes:
    """The command's output once it exits; past OUTPUT_LIMIT only its head and tail are kept
    (a runaway log must not become one huge event in Redis), with a note of what was cut."""
    assert proc.stdout is not None
    half = OUTPUT_LIMIT // 2
    head, tail, total = bytearray(), bytearray(), 0
    while chunk := await proc.stdout.read(1 << 16):
        total += len(chunk)
        room = half - len(head)
        head += chunk[:max(room, 0)]
        tail += chunk[max(room, 0):]
        del tail[:-half]
    await proc.wait()
    cut = total - len(head) - len(tail)
    note = f"\n[… {cut} bytes of output not kept …]\n".encode() if cut else b""
    return bytes(head + note + tail)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- runbooks declared in the policy file ([runbooks.NAME]) ----------------------------------

def declared_runbook(name: str, spec: RunbookSpec, policy: Policy) -> Tool:
    """A runbook tool from the policy file: every argument a string matched in full by its
    pattern; a value starting with "-" is refused unless the argument allows it (else
    `{service}` = `--force` would become an option of the command)."""
    fields: dict[str, Any] = {
        arg: (str, Field(description=rule.description or arg, json_schema_extra={"pattern": rule.pattern}))
        for arg, rule in spec.args.items()
    }
    validators = {f"_check_{arg}": field_validator(arg)(_arg_check(arg, rule)) for arg, rule in spec.args.items()}
    model = create_model(f"Runbook_{name}", __config__=ConfigDict(extra="forbid"),
                         __validators__=validators, **fields)
    gate = _always if spec.needs_approval else never
    return runbook_tool(name, spec.description or f"Runs {spec.command[0]}.", model, spec.command,
                        policy=policy, timeout=spec.timeout, needs_approval=gate)


def _arg_check(arg: str, rule: RunbookArg) -> Callable[[str], str]:
    pattern = re.compile(rule.pattern)

    def check(value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL")
        if value.startswith("-") and not rule.allow_dash:
            raise ValueError("must not start with '-' (it would be read as an option)")
        if not pattern.fullmatch(value):
            raise ValueError(f"must match {rule.pattern}")
        return value

    return check


def _always(_args: Any) -> bool:
    return True
