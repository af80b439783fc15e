"""`doctor` on a Redis Cluster: every master answers and persists, the inbox is sharded across the
cluster, and CHATOPS_REDIS_MIN_REPLICAS matches the replicas each master really has."""

from __future__ import annotations

from typing import cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from bot.doctor import Finding, error, ok, warning
from bot.policy import ConfigError
from bot.redis_client import check_server, connect
from bot.settings import Settings


async def findings(settings: Settings) -> list[Finding]:
    assert settings.redis_url is not None
    client = connect(settings.redis_url)
    assert isinstance(client, RedisCluster)
    try:
        await check_server(client)
        await client.initialize()
        return await _findings(client, settings)
    except ConfigError as exc:
        return [error(str(exc), "correct REDIS_URL")]
    except (RedisClusterException, RedisError, OSError) as exc:
        return [error(f"Redis Cluster at REDIS_URL does not answer: {exc}",
                      "start the cluster, or correct REDIS_URL")]
    finally:
        await client.aclose()


async def _findings(client: RedisCluster, settings: Settings) -> list[Finding]:
    masters = client.get_primaries()
    state = (await client.cluster_info())["cluster_state"]
    replication = (await client.info("replication", target_nodes=masters)).values()
    # with target_nodes redis-py answers {node: {parameter: value}}, typed as one node's reply
    config = cast("list[dict[str, str]]", list(
        (await client.config_get("appendonly", target_nodes=masters)).values()))
    eviction = cast("list[dict[str, str]]", list(
        (await client.config_get("maxmemory-policy", target_nodes=masters)).values()))
    # counted from the masters' INFO, as the rule below is; the client's slot map can lag
    # behind a replica that has just joined
    replicas = [int(info.get("connected_slaves", 0)) for info in replication]
    fewest = min(replicas)
    out = [ok(f"Redis Cluster reachable at REDIS_URL: {len(masters)} master(s), "
              f"{sum(replicas)} replica(s)")]
    if state != "ok":
        out.append(error(f"Redis Cluster state is {state!r}: commands are refused",
                         "bring the failed nodes back, or fail over to their replicas"))
    if any(c.get("appendonly") != "yes" for c in config):
        out.append(warning("Redis Cluster persistence: a master has no append-only file; a crash "
                           "loses what was written since its last snapshot",
                           "CONFIG SET appendonly yes on every node (and in redis.conf)"))
    if any(e.get("maxmemory-policy") != "noeviction" for e in eviction):
        out.append(error("Redis Cluster: a master's maxmemory-policy is not noeviction: under memory "
                         "pressure it deletes keys, and a deleted key is a lost thread",
                         "CONFIG SET maxmemory-policy noeviction on every node (and in redis.conf)"))
    if settings.inbox_shards == 1:
        out.append(warning("CHATOPS_INBOX_SHARDS is 1 on a Redis Cluster: the whole inbox is one "
                           "stream in one slot, so one node takes every wake-up",
                           "set CHATOPS_INBOX_SHARDS=16 (a thread keeps its shard; see README)"))
    out += _replica_findings(fewest, settings.redis_min_replicas)
    return out


def _replica_findings(fewest: int, min_replicas: int) -> list[Finding]:
    if fewest and not min_replicas:
        return [warning(f"every Redis Cluster master has {fewest} replica(s) but "
                        "CHATOPS_REDIS_MIN_REPLICAS is 0: after a failover an approved action can "
                        "run twice", "set CHATOPS_REDIS_MIN_REPLICAS=1 (or more)")]
    if min_replicas > fewest:
        return [error(f"CHATOPS_REDIS_MIN_REPLICAS is {min_replicas} but a Redis Cluster master has "
                      f"{fewest} connected replica(s): no tool would start on its threads",
                      "lower CHATOPS_REDIS_MIN_REPLICAS or add replicas")]
    if min_replicas:
        return [ok(f"Redis Cluster replicas: at least {fewest} per master, {min_replicas} must "
                   "acknowledge each tool start")]
    return []
