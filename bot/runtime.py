"""What every process shares: settings, policy, Redis, store, agents, approvals, model, and the
channels the composition root passed in (bot/wiring.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from bot.agent import Agent
from bot.approvals import Approvals
from bot.channel import Channel, Renderer
from bot.embedded_redis import EmbeddedRedis
from bot.intake import Intake
from bot.keys import Keys
from bot.policy import ConfigError, Policy, load_policy
from bot.redis_client import check_server, connect
from bot.settings import Settings
from bot.store import Store
from bot.wiring import Wiring

if TYPE_CHECKING:  # the anthropic SDK takes a second to import: CLI verbs that only read Redis skip it
    from bot.model import Model

log = logging.getLogger("chatops")


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    redis: Redis
    store: Store
    agents: dict[str, Agent]
    approvals: Approvals
    intake: Intake
    model: Model | None
    wiring: Wiring
    channels: dict[str, Channel] = field(default_factory=dict)
    renderers: dict[str, Renderer] = field(default_factory=dict)  # by channel name
    secret_env: frozenset[str] = frozenset()  # the channels' secret variables, kept from runbooks
    embedded: EmbeddedRedis | None = None
    watcher: asyncio.Task | None = None
    # what the channels' services started and close with the runtime (a pool, background calls)
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, wiring: Wiring, *, serving: bool = True) -> Runtime:
        """Start with the channels and agents of `wiring`. `serving=False`: no model client and
        no channel renderers, for a process that only reads and appends (CLI verbs, the console);
        a worker elsewhere renders and calls the model."""
        policy, agents = load_checked(settings, wiring)
        embedded = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir)
            url = await embedded.start()
            log.info("using the embedded Redis at %s (data in %s)", url, settings.data_dir)
        redis = connect(url)
        try:
            await check_server(redis)
        except ConfigError:
            await redis.aclose()
            raise
        store = Store(redis, Keys(settings.key_prefix, settings.inbox_shards), min_replicas=settings.redis_min_replicas,
                      replica_timeout=settings.redis_replica_timeout)
        rt = cls(
            settings=settings,
            policy=policy,
            redis=redis,
            store=store,
            agents=agents,
            approvals=Approvals(store, policy, settings.approval_ttl),
            intake=Intake(store, settings.requests_per_hour),
            model=_model(settings) if serving else None,
            wiring=wiring,
            channels={channel.name: channel for channel in wiring.channels},
            secret_env=wiring.secret_env(),
            embedded=embedded,
        )
        if serving:
            rt.install_renderers()
        path = settings.resolved_policy_file()
        if path is not None and settings.policy_poll > 0:
            rt.watcher = asyncio.create_task(rt.watch_policy(path), name="policy-watcher")
        return rt

    def install_renderers(self) -> None:
        for channel in self.channels.values():
            renderer = channel.renderer(self)
            if renderer is not None:
                self.renderers[channel.name] = renderer

    # ---- the live policy ---------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the policy file again (SIGHUP, or the file changed). A policy that fails to load
        or to check is refused whole: the one in force stays, and an ERROR line says why."""
        try:
            policy, agents = load_checked(self.settings, self.wiring)
        except Exception as exc:  # whatever breaks, the policy in force must stay
            log.error("policy reload refused, the policy in force stays: %s", exc)
            return False
        self.policy = policy
        self.approvals.policy = policy
        self.agents.clear()
        self.agents.update(agents)
        log.info("policy reloaded from %s", self.settings.resolved_policy_file())
        return True

    async def watch_policy(self, path: Path) -> None:
        """Reload when the file's content changes (read, not its mtime: an editor's save is seen
        even within one mtime tick, and a half-written file is retried at the next look)."""
        seen = _read(path)
        while True:
            await asyncio.sleep(self.settings.policy_poll)
            now = _read(path)
            if now != seen:
                seen = now
                self.reload()

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Call `close` when the runtime closes (first, before the renderers and Redis it may use)."""
        self.closing.append(close)

    async def close(self) -> None:
        for close in reversed(self.closing):
            try:
                await close()
            except Exception:
                log.exception("closing a channel's service failed")
        self.closing.clear()
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        for agent in self.agents.values():  # stops the MCP servers this process started
            await agent.close()
        for renderer in self.renderers.values():
            await renderer.close()
        if self.model is not None:
            await self.model.close()
        await self.redis.aclose()
        if self.embedded is not None:
            await self.embedded.stop()


def _model(settings: Settings) -> Model | None:
    if not settings.model_configured:
        return None
    from bot.model import Model

    return Model(settings)


def load_checked(settings: Settings, wiring: Wiring) -> tuple[Policy, dict[str, Agent]]:
    """The policy file and the agents built from it, checked together: every section names a
    real agent or tool, and no approval setting gates nothing."""
    policy = load_policy(settings.resolved_policy_file())
    agents = wiring.load_agents(policy)
    policy.check_names({name: [t.name for t in agent.tools] for name, agent in agents.items()})
    policy.check_gates({t.name: (t.gated, t.fields) for agent in agents.values() for t in agent.tools})
    if settings.default_agent not in agents:
        raise ConfigError(
            f"CHATOPS_DEFAULT_AGENT: no agent named {settings.default_agent!r} "
            f"(agents: {', '.join(sorted(agents))})"
        )
    return policy, agents


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
