"""The runbook tool kind: run a configured command, never through a shell.

The command is an argv list; `{field}` placeholders are filled from the validated arguments, one
list element at a time, so an argument can never become a second argument or a shell word.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from bot.policy import Policy
from bot.tools import Tool, ToolContext, ToolError


def runbook_tool(
    name: str,
    description: str,
    args: type[BaseModel],
    command: list[str],
    *,
    policy: Policy,
    timeout: float = 120.0,
    needs_approval: Callable[[Any], bool] = lambda _args: False,
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


async def run_command(argv: list[str], timeout: float, ctx: ToolContext) -> str:
    env = {**os.environ, "CHATOPS_DATA_DIR": str(ctx.data_dir), "CHATOPS_THREAD": ctx.thread_id}
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
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise ToolError(f"{argv[0]} timed out after {timeout:g}s") from None
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ToolError(f"exit status {proc.returncode}: {text}")
    return text
