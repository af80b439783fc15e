"""`chatops doctor`: says in plain words what is configured, what is missing, what is risky, and
how to fix it. Each check is an async function of the `Context`; they run concurrently, each
with its own deadline, so one that hangs is named instead of holding up the rest.

To add a check (an MCP server, a Redis replica): write `async def check(ctx) -> list[Finding]`
and add a `DoctorCheck` to the list `checks()` returns (a channel adds its own: `Channel.checks()`).
Checks import what they need inside themselves (the doctor must start fast) and name those
modules in `needs`: they are imported before the clocks start, so a slow import is never taken
for a slow service.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from bot.policy import ConfigError, Policy
from bot.settings import Settings, invalid_setting

if TYPE_CHECKING:
    from bot.agent import Agent
    from bot.channel import Channel
    from bot.wiring import Wiring

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    level: Level
    message: str
    fix: str = ""  # what to do about it (warnings and errors)


LEVELS: dict[str, Level] = {"ok": "ok", "warn": "warning", "warning": "warning", "error": "error"}


def leveled(found: list[tuple[str, str]]) -> list[Finding]:
    """Findings from the (level, message) pairs of modules that do not import the doctor."""
    return [Finding(LEVELS[level], message) for level, message in found]


@dataclass(frozen=True)
class Context:
    settings: Settings
    policy: Policy
    agents: dict[str, Agent]
    channels: Sequence[Channel] = ()


Check = Callable[[Context], Awaitable[list[Finding]]]


@dataclass(frozen=True)
class DoctorCheck:
    name: str  # says which part was slow
    run: Check
    needs: Callable[[Context], Sequence[str]] = lambda _ctx: ()  # modules `run` will import


def ok(message: str) -> Finding:
    return Finding("ok", message)


def warning(message: str, fix: str = "") -> Finding:
    return Finding("warning", message, fix)


def error(message: str, fix: str = "") -> Finding:
    return Finding("error", message, fix)


def checks(wiring: Wiring) -> list[DoctorCheck]:
    """Every check, in the order of the report: the core's, then each channel's."""
    return [
        DoctorCheck("policy", policy_check),
        DoctorCheck("Redis", redis_check, lambda ctx: ["redis.asyncio", "bot.cluster_doctor"]),
        DoctorCheck("Redis replicas", replicas_check, lambda ctx: ["bot.redis_client"]),
        DoctorCheck("model", model_check, lambda ctx: ["aiohttp"] if ctx.settings.model_configured else []),
        DoctorCheck("HTTP API", api_check),
        DoctorCheck("ports", ports_check),
        DoctorCheck("approvals", approvals_check),
        DoctorCheck("runbooks", runbooks_check),
        DoctorCheck("MCP servers", mcp_check, _mcp_needs),
        *(check for channel in wiring.channels for check in channel.checks()),
    ]


async def doctor(wiring: Wiring, selected: Sequence[DoctorCheck] | None = None) -> int:
    """Print one line per finding (and its fix); 1 if any is an error."""
    try:
        settings = Settings()
    except ValidationError as exc:
        return report_invalid(exc)
    try:
        from bot.runtime import load_checked

        policy, agents = load_checked(settings, wiring)
        ctx = Context(settings, policy, agents, wiring.channels)
    except ConfigError as exc:
        _print(error(str(exc), "correct the policy file (see chatops.example.toml)"))
        return 1
    findings = await run_checks(ctx, selected if selected is not None else checks(wiring),
                                settings.doctor_timeout)
    for finding in findings:
        _print(finding)
    return 1 if any(f.level == "error" for f in findings) else 0


async def run_checks(ctx: Context, selected: Sequence[DoctorCheck], timeout: float) -> list[Finding]:
    """All at once, each within `timeout` seconds (its imports done before its clock starts)."""
    for check in selected:
        for module in check.needs(ctx):
            importlib.import_module(module)
    results = await asyncio.gather(*(_timed(c.name, c.run, ctx, timeout) for c in selected))
    return [finding for found in results for finding in found]


async def _timed(name: str, check: Check, ctx: Context, timeout: float) -> list[Finding]:
    started = time.monotonic()
    try:
        return await asyncio.wait_for(check(ctx), timeout)
    except TimeoutError:
        return [error(f"{name}: no answer within {timeout:g} s, so it was not checked",
                      f"see why {name} is slow or unreachable (network, firewall, the address set)")]
    except Exception as exc:  # a broken check must not hide the others
        took = time.monotonic() - started
        return [error(f"{name}: the check failed after {took:.1f} s: {type(exc).__name__}: {exc}")]


def _print(finding: Finding) -> None:
    print(f"{finding.level}: {finding.message}")
    if finding.fix and finding.level != "ok":
        print(f"  fix: {finding.fix}")


# ---- the core checks -------------------------------------------------------------------------

async def policy_check(ctx: Context) -> list[Finding]:
    source = ctx.settings.resolved_policy_file()
    return [ok(f"policy: {source or 'none (built-in defaults)'}; agents: {', '.join(sorted(ctx.agents))}")]


async def redis_check(ctx: Context) -> list[Finding]:
    from bot.embedded_redis import redis_server_binary

    settings = ctx.settings
    if not settings.redis_url:
        try:
            binary = redis_server_binary()
        except ConfigError as exc:
            return [error(str(exc), "install redis-server, or set REDIS_URL")]
        return [ok(f"no REDIS_URL: the bot runs its own Redis ({binary}) with data in "
                   f"{settings.data_dir}, append-only file on")]
    if _cluster_url(settings.redis_url):
        from bot.cluster_doctor import findings

        return await findings(settings)
    return await redis_server_findings(settings.redis_url)


def _cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower().endswith("+cluster")


async def redis_server_findings(url: str) -> list[Finding]:
    """Reachable, persistent, and never evicting keys (an evicted thread is a lost thread)."""
    from redis.asyncio import Redis
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    from bot.redis_client import connect

    client = connect(url) if "+sentinel" in url.split("://", 1)[0] else \
        Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, retry_on_timeout=False)
    try:
        await client.ping()
    except AuthenticationError as exc:
        await client.aclose()
        return [error(f"Redis at REDIS_URL refused the credentials: {exc}",
                      "correct the user and password in REDIS_URL (redis://user:password@host:6379/0)")]
    except (RedisError, OSError) as exc:
        await client.aclose()
        return [error(f"Redis at REDIS_URL does not answer: {exc}",
                      "start Redis, or correct REDIS_URL (unset, the bot runs its own)")]
    out = [ok("Redis reachable at REDIS_URL")]
    try:
        config = {**await client.config_get("appendonly"), **await client.config_get("save"),
                  **await client.config_get("maxmemory-policy")}
    except ResponseError as exc:  # managed services often disable CONFIG
        out.append(warning(f"Redis: cannot read its configuration ({exc}), so persistence and "
                           "eviction were not checked",
                           "make sure the service persists data (AOF or RDB) and uses "
                           "maxmemory-policy noeviction"))
        return out
    finally:
        await client.aclose()
    if config.get("appendonly") == "yes":
        out.append(ok("Redis persistence: append-only file on"))
    elif config.get("save"):
        out.append(warning(f"Redis persistence: RDB snapshots only ({config['save']}); a crash "
                           "loses what was written since the last one",
                           "CONFIG SET appendonly yes (and in redis.conf)"))
    else:
        out.append(warning("Redis persistence: none; a restart loses every thread and approval",
                           "CONFIG SET appendonly yes (and in redis.conf)"))
    policy = config.get("maxmemory-policy", "")
    if policy == "noeviction":
        out.append(ok("Redis maxmemory-policy: noeviction"))
    else:
        out.append(error(f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis deletes "
                         "keys, and a deleted key is a lost thread, lease or approval",
                         "CONFIG SET maxmemory-policy noeviction (and in redis.conf)"))
    return out


async def replicas_check(ctx: Context) -> list[Finding]:
    """Replicas that exist while CHATOPS_REDIS_MIN_REPLICAS waits for none (a failover could
    then lose a tool's start marker)."""
    from bot.redis_client import replica_findings

    if not ctx.settings.redis_url or _cluster_url(ctx.settings.redis_url):
        return []  # a cluster's replicas: per master, in the Redis check
    found = await replica_findings(ctx.settings.redis_url, ctx.settings.redis_min_replicas)
    return leveled(found)


ANTHROPIC_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


async def model_check(ctx: Context) -> list[Finding]:
    """One POST to the Messages API's token counter with the key: authenticated, runs no model,
    costs nothing. Plain aiohttp rather than the SDK, whose import alone takes 1-5 s."""
    settings = ctx.settings
    if not settings.model_configured:
        return [warning("ANTHROPIC_API_KEY is not set: the bot understands exact commands only",
                        "set ANTHROPIC_API_KEY to let the model read free text")]
    import aiohttp

    assert settings.anthropic_api_key is not None
    base = (settings.anthropic_base_url or ANTHROPIC_URL).rstrip("/")
    where = f" at {settings.anthropic_base_url}" if settings.anthropic_base_url else ""
    headers = {"x-api-key": settings.anthropic_api_key.get_secret_value(),
               "anthropic-version": ANTHROPIC_VERSION}
    body = _sample_request(ctx)
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"{base}/v1/messages/count_tokens", json=body, headers=headers) as response:
            status = response.status
            answer = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, ValueError) as exc:
        return [error(f"model: could not reach the API{where}: {type(exc).__name__}: {exc}",
                      "check the network, or ANTHROPIC_BASE_URL")]
    if status in (401, 403):
        return [error(f"model: the API{where} refused ANTHROPIC_API_KEY ({status})",
                      "set a valid key (console.anthropic.com → API keys)")]
    if status == 404:
        return [error(f"model: the API{where} does not know the model {settings.model!r}, or is not "
                      "the Messages API", "set CHATOPS_MODEL to a model your key can use; check "
                      "ANTHROPIC_BASE_URL")]
    if status != 200 or not isinstance(answer, dict) or "input_tokens" not in answer:
        return [error(f"model: the API{where} answered {status} to a token count",
                      "check ANTHROPIC_BASE_URL and the provider's status page")]
    found = [ok(f"model: {settings.model}{where} answers (counted {answer['input_tokens']} tokens)")]
    from bot.compaction import estimate_verdict

    covered, verdict = estimate_verdict(body["system"], body["tools"], int(answer["input_tokens"]))
    found.append(ok(verdict) if covered else
                 warning(verdict, "lower CHATOPS_CONTEXT_TOKENS to stay within the model's limit"))
    return found


def _sample_request(ctx: Context) -> dict:
    """A typical request of the default agent (its system prompt, its tools, a short tool turn):
    counting it proves the key works and checks the context budget's token estimate."""
    from bot.commands import help_text
    from bot.compaction import SAMPLE_MESSAGES
    from bot.prompts import render

    agent = ctx.agents.get(ctx.settings.default_agent) or next(iter(ctx.agents.values()))
    return {"model": ctx.settings.model, "messages": SAMPLE_MESSAGES,
            "system": render(agent.prompt, agent=agent.name, commands=help_text(agent)),
            "tools": [t.schema() for t in agent.model_tools]}


async def api_check(ctx: Context) -> list[Finding]:
    settings = ctx.settings
    if settings.api_token is None:
        return [warning("CHATOPS_API_TOKEN is not set: the HTTP API refuses every request",
                        "set CHATOPS_API_TOKEN to a long random string for the integrations "
                        "that use the API")]
    return [ok(f"HTTP API on {settings.host}:{settings.port}")]


async def ports_check(ctx: Context) -> list[Finding]:
    """The HTTP port `chatops run` listens on is free (run the doctor before the bot); a channel
    that listens checks its own port with `port_finding`."""
    found = port_finding("PORT", ctx.settings.host, ctx.settings.port)
    return [found] if found is not None else []


def port_finding(name: str, host: str, port: int) -> Finding | None:
    """Whether `host:port` (the setting `name`) is free to listen on; None for port 0 (any)."""
    if port == 0:
        return None
    if why := _bind_fails(host, port):
        return error(f"{name}: {host}:{port} is taken ({why})",
                     f"stop what listens there (is chatops already running?) or set {name}")
    return ok(f"{name}: {host}:{port} is free")


def report_invalid(exc: ValidationError) -> int:
    """Report a setting that does not validate (the core's or a channel's): 1."""
    _print(error(invalid_setting(exc), "correct it in the environment or .env (see .env.example)"))
    return 1


def _bind_fails(host: str, port: int) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return str(exc)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


async def approvals_check(ctx: Context) -> list[Finding]:
    policy, out = ctx.policy, []
    for agent in ctx.agents.values():
        for tool in agent.tools:
            entries = policy.approvers_for(tool.name)
            gated = tool.gated or policy.tool(tool.name).require_approval
            if entries == ["*"] and gated:
                who = "the agent's [agents.%s] users" % agent.name if policy.agent(agent.name).users \
                    else "anyone who can talk to the bot"
                out.append(warning(f"{agent.name}.{tool.name}: approvers are anyone (\"*\" or none "
                                   f"configured), so {who} may approve it",
                                   f"list them in [tools.{tool.name}] approvers"))
            for entry in entries:
                if entry.startswith("group:") and entry[6:] not in policy.groups:
                    out.append(error(f"tools.{tool.name}.approvers: unknown group {entry[6:]!r}",
                                     f"declare it in [groups] or remove it from [tools.{tool.name}]"))
    return out


async def runbooks_check(ctx: Context) -> list[Finding]:
    out = []
    for agent in ctx.agents.values():
        for tool in agent.tools:
            if not tool.command:
                continue
            program = tool.command[0]
            path = program if os.sep in program else shutil.which(program)
            if not path or not os.access(path, os.X_OK):
                out.append(error(f"tools.{tool.name}.command: {program} is not an executable",
                                 f"install it, chmod +x it, or point [tools.{tool.name}] command "
                                 "at your own script"))
            else:
                out.append(ok(f"tools.{tool.name}.command: {path}"))
    return out


async def mcp_check(ctx: Context) -> list[Finding]:
    """Each MCP server's state and tools (safe / gated); the servers are started to ask them."""
    if not any(agent.sources for agent in ctx.agents.values()):
        return []
    from bot.mcp_status import server_findings

    try:
        found = await server_findings(ctx.agents)
    finally:
        for agent in ctx.agents.values():
            await agent.close()
    return leveled(found)


def _mcp_needs(ctx: Context) -> list[str]:
    return ["bot.mcp_client"] if any(agent.sources for agent in ctx.agents.values()) else []
