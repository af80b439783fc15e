"""The wiring every process shares: settings, policy, Redis, store, agents, approvals, model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis

from agents import load_agents
from bot.agent import Agent
from bot.approvals import Approvals
from bot.channel import Renderer, install_renderers
from bot.embedded_redis import EmbeddedRedis
from bot.intake import Intake
from bot.keys import Keys
from bot.model import Model
from bot.policy import ConfigError, Policy, load_policy
from bot.redis_client import check_server, connect
from bot.settings import Settings
from bot.store import Store

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
    renderers: dict[str, Renderer] = field(default_factory=dict)
    embedded: EmbeddedRedis | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        policy = load_policy(settings.resolved_policy_file())
        agents = load_agents(policy)
        policy.check_names({name: [t.name for t in agent.tools] for name, agent in agents.items()})
        if settings.default_agent not in agents:
            raise ConfigError(
                f"CHATOPS_DEFAULT_AGENT: no agent named {settings.default_agent!r} "
                f"(agents: {', '.join(sorted(agents))})"
            )
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
            intake=Intake(store),
            model=Model(settings) if settings.model_configured else None,
            embedded=embedded,
        )
        install_renderers(rt)
        return rt

    async def close(self) -> None:
        for renderer in self.renderers.values():
            await renderer.close()
        if self.model is not None:
            await self.model.close()
        await self.redis.aclose()
        if self.embedded is not None:
            await self.embedded.stop()
