"""The Redis client for REDIS_URL: a single Redis, a Sentinel-managed master, or (later) a cluster.

    redis://[:password@]host:port/db           rediss:// for TLS, unix:///path/to/socket
    redis+sentinel://[:password@]host:port[,host:port...]/<service>[/db]
    rediss+sentinel://...                      TLS to the master (the sentinels too)

With Sentinel the client asks the sentinels for the master on every new connection, and a
connection to a master that was demoted fails with ReadOnlyError, which redis-py turns into a
ConnectionError: the failover is an outage like any other, and the retry reaches the new master.
The password is the data nodes' (sentinels themselves are reached without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from bot.policy import ConfigError
from bot.redis_connection import LeanConnection

REDIS_CONNECTIONS = 100
REDIS_POOL_WAIT = 30.0  # seconds a task waits for a free connection before it fails
# Sentinel-managed connections need a read timeout: a master frozen mid-failover keeps its TCP
# connections open and would hang a command forever. Above the inbox's 1 s blocking read.
SENTINEL_SOCKET_TIMEOUT = 10.0
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True)
class SentinelURL:
    hosts: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def check_scheme(url: str) -> str:
    """The URL's scheme if we support it; else ValueError in words a settings error can show."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis+cluster", "rediss+cluster"):
        raise ValueError("Redis Cluster is not supported yet; use a single Redis or Sentinel")
    if scheme not in SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ValueError(f"{shown} is not supported; use redis://host:port/db (rediss:// for TLS, "
                         "unix:///path) or redis+sentinel://host:port[,host:port...]/<service>")
    return scheme


def parse_sentinel(url: str) -> SentinelURL:
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    hosts = []
    for item in filter(None, hostlist.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_URL: sentinel address {item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError("REDIS_URL: expected redis+sentinel://[:password@]host:port[,host:port...]"
                          "/<service>[/db]")
    return SentinelURL(
        hosts=hosts, service=unquote(path[0]), db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None, password=unquote(password) or None,
        tls=parts.scheme.lower().startswith("rediss"),
    )


def connect(url: str) -> Redis:
    """A client for REDIS_URL (no I/O yet: a Redis that is down at start is waited for)."""
    if check_scheme(url).endswith("+sentinel"):
        return _sentinel_master(parse_sentinel(url))
    # A blocking pool: with hundreds of threads in flight a task waits for a free connection
    # instead of failing with MaxConnectionsError (redis-py's default pool raises at 100).
    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT,
        health_check_interval=30, retry_on_timeout=True,
        connection_class=LeanConnection,  # redis:// only: a rediss:// or unix:// URL picks its own
    )
    return Redis.from_pool(pool)


def _sentinel_master(s: SentinelURL) -> Redis:
    common = dict(socket_timeout=SENTINEL_SOCKET_TIMEOUT, socket_connect_timeout=2.0)
    sentinel = Sentinel(s.hosts, sentinel_kwargs={**common, "ssl": s.tls}, **common)
    return sentinel.master_for(
        s.service, redis_class=Redis, db=s.db, username=s.username, password=s.password, ssl=s.tls,
        health_check_interval=30, retry_on_timeout=True, max_connections=REDIS_CONNECTIONS,
    )


async def check_server(redis: Redis) -> None:
    """Refuse at start what no retry can fix (ConfigError, one line naming REDIS_URL): a wrong
    password, or a Redis Cluster node given as a plain URL. An unreachable Redis is not an error
    here: the processes wait for it."""
    try:
        info = await redis.info("cluster")
    except (AuthenticationError, ResponseError) as exc:
        if not isinstance(exc, AuthenticationError) and "NOAUTH" not in str(exc):
            return  # e.g. INFO renamed on a managed service: nothing to refuse
        if redis.connection_pool.connection_kwargs.get("password"):
            raise ConfigError("REDIS_URL: Redis refused the password in REDIS_URL; correct it "
                              "(redis://:<password>@host:port/db)") from None
        raise ConfigError("REDIS_URL: Redis requires a password; add it to REDIS_URL "
                          "(redis://:<password>@host:port/db)") from None
    except (RedisError, OSError):
        return
    if info.get("cluster_enabled"):
        raise ConfigError("REDIS_URL points at a Redis Cluster node, which a plain redis:// URL "
                          "cannot use; Redis Cluster is not supported yet: use a single Redis or "
                          "Sentinel")


async def replica_findings(url: str, min_replicas: int) -> list[tuple[str, str]]:
    """`doctor`: (level, message) about CHATOPS_REDIS_MIN_REPLICAS against the replicas the master
    really has: replicas with the setting at 0 mean a failover can run an approved action twice;
    more required than exist means no tool ever starts."""
    client = connect(url)
    try:
        info = await client.info("replication")
    except (RedisError, OSError):
        return []  # the reachability check says it
    finally:
        await client.aclose()
    replicas = int(info.get("connected_slaves", 0))
    if replicas and not min_replicas:
        return [("warn", f"Redis has {replicas} replica(s) but CHATOPS_REDIS_MIN_REPLICAS is 0: after "
                         "a failover an approved action can run twice; set it to 1 (or more)")]
    if min_replicas > replicas:
        return [("error", f"CHATOPS_REDIS_MIN_REPLICAS is {min_replicas} but Redis has {replicas} "
                          "connected replica(s): no tool would start and no input be acknowledged")]
    if min_replicas:
        return [("ok", f"Redis replicas: {replicas}, {min_replicas} must acknowledge each tool start")]
    return []
