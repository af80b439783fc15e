"""`chatops doctor`: says in plain words what is configured, what is missing, what is risky."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from pydantic import ValidationError

from agents import load_agents
from bot.channel import load_channels
from bot.embedded_redis import ping, redis_server_binary
from bot.policy import ConfigError, Policy, load_policy
from bot.settings import Settings

Check = Callable[[Settings, Policy], list[tuple[str, str]]]
# Channels append their own checks; each returns (level, message) pairs, level ok|warn|error.
CHECKS: list[Check] = []


async def doctor() -> int:
    lines: list[tuple[str, str]] = []
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
        return 1
    try:
        policy = load_policy(settings.resolved_policy_file())
        agents = load_agents(policy)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 1
    source = settings.resolved_policy_file()
    lines.append(("ok", f"policy: {source or 'none (built-in defaults)'}; agents: {', '.join(sorted(agents))}"))
    lines += await _redis(settings)
    lines += await _replicas(settings)
    if settings.model_configured:
        lines.append(("ok", f"model: {settings.model}" + (f" at {settings.anthropic_base_url}"
                                                            if settings.anthropic_base_url else "")))
    else:
        lines.append(("warn", "ANTHROPIC_API_KEY is not set: the bot understands exact commands only"))
    if settings.api_token is None:
        lines.append(("warn", "CHATOPS_API_TOKEN is not set: the HTTP API refuses every request"))
    else:
        lines.append(("ok", f"HTTP API on {settings.host}:{settings.port}"))
    lines += _approvals(policy, agents)
    lines += _runbooks(agents)
    load_channels()
    for check in CHECKS:
        lines += check(settings, policy)
    for level, message in lines:
        print(f"{level}: {message}")
    return 1 if any(level == "error" for level, _ in lines) else 0


async def _redis(settings: Settings) -> list[tuple[str, str]]:
    if settings.redis_url:
        if await ping(settings.redis_url):
            return [("ok", "Redis reachable at REDIS_URL")]
        return [("error", "Redis at REDIS_URL does not answer")]
    try:
        return [("ok", f"no REDIS_URL: the bot runs its own Redis ({redis_server_binary()}) "
                       f"with data in {settings.data_dir}")]
    except ConfigError as exc:
        return [("error", str(exc))]


async def _replicas(settings: Settings) -> list[tuple[str, str]]:
    from bot.redis_client import replica_findings

    if not settings.redis_url:
        return []
    return await replica_findings(settings.redis_url, settings.redis_min_replicas)


def _approvals(policy: Policy, agents: dict) -> list[tuple[str, str]]:
    out = []
    for agent in agents.values():
        for tool in agent.tools:
            entries = policy.approvers_for(tool.name)
            if not entries and tool.gated:
                who = "the agent's [agents.%s] users" % agent.name if policy.agent(agent.name).users \
                    else "anyone who can talk to the bot"
                out.append(("warn", f"{agent.name}.{tool.name}: no approvers configured, so {who} "
                                    "may approve it"))
            for entry in entries:
                if entry.startswith("group:") and entry[6:] not in policy.groups:
                    out.append(("error", f"tools.{tool.name}.approvers: unknown group {entry[6:]!r}"))
    return out


def _runbooks(agents: dict) -> list[tuple[str, str]]:
    out = []
    for agent in agents.values():
        for tool in agent.tools:
            if not tool.command:
                continue
            program = tool.command[0]
            path = program if os.sep in program else shutil.which(program)
            if not path or not os.access(path, os.X_OK):
                out.append(("error", f"tools.{tool.name}.command: {program} is not an executable"))
    return out
