"""The Redis client for REDIS_URL: a single Redis, a Sentinel-managed master, or a Redis Cluster.

    redis://[:password@]host:port/db           rediss:// for TLS, unix:///path/to/socket
    redis+sentinel://[:password@]host:port[,host:port...]/<service>[/db]
    rediss+sentinel://...                      TLS to the master (the sentinels too)
    redis+cluster://[:password@]host:port[,host:port...]   rediss+cluster:// for TLS

With Sentinel the client asks the sentinels for the master on every new connection, and a
connection to a master that was demoted fails with ReadOnlyError, which redis-py turns into a
ConnectionError: the failover is an outage like any other, and the retry reaches the new master.
The password is the data nodes' (sentinels themselves are reached without one).

With a cluster, redis-py's cluster client routes each command to its slot's master; the nodes in
the URL are only where it starts discovering the cluster (any one reachable is enough).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.driver_info import DriverInfo
from redis.exceptions import (
    AuthenticationError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from bot.outage import config_error
from bot.policy import ConfigError
from bot.redis_connection import ClusterConnection, ClusterSSLConnection, LeanConnection

REDIS_CONNECTIONS = 100
# redis-py resolves its own version (importlib.metadata, a scan of sys.path) for CLIENT SETINFO
# in every new connection's constructor: about 5 ms each, 7 % of a worker's CPU while it opens its
# pool under a burst. Resolved once here; the connections still send it.
DRIVER = DriverInfo()
REDIS_POOL_WAIT = 30.0  # seconds a task waits for a free connection before it fails
# Sentinel-managed connections need a read timeout: a master frozen mid-failover keeps its TCP
# connections open and would hang a command forever. Above the inbox's 1 s blocking read.
SENTINEL_SOCKET_TIMEOUT = 10.0
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
           "rediss+cluster")


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
    if scheme not in SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ValueError(f"{shown} is not supported; use redis://host:port/db (rediss:// for TLS, "
                         "unix:///path), redis+sentinel://host:port[,host:port...]/<service> or "
                         "redis+cluster://host:port[,host:port...]")
    return scheme


def _hosts(netloc: str, what: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The host:port list of a multi-host URL, and its user name and password."""
    userinfo, _, hostlist = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    hosts = []
    for item in filter(None, hostlist.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_URL: {what} address {item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts, unquote(username) or None, unquote(password) or None


def parse_sentinel(url: str) -> SentinelURL:
    parts = urlsplit(url)
    hosts, username, password = _hosts(parts.netloc, "sentinel")
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError("REDIS_URL: expected redis+sentinel://[:password@]host:port[,host:port...]"
                          "/<service>[/db]")
    return SentinelURL(
        hosts=hosts, service=unquote(path[0]), db=int(path[1]) if len(path) == 2 else 0,
        username=username, password=password, tls=parts.scheme.lower().startswith("rediss"),
    )


@dataclass(frozen=True)
class ClusterURL:
    hosts: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_cluster(url: str) -> ClusterURL:
    parts = urlsplit(url)
    hosts, username, password = _hosts(parts.netloc, "cluster node")
    if not hosts or parts.path.strip("/") not in ("", "0"):
        raise ConfigError("REDIS_URL: expected redis+cluster://[:password@]host:port[,host:port...] "
                          "(a cluster has no database number)")
    return ClusterURL(hosts, username, password, parts.scheme.lower().startswith("rediss"))


def connect(url: str) -> Redis:
    """A client for REDIS_URL (no I/O yet: a Redis that is down at start is waited for)."""
    scheme = check_scheme(url)
    if scheme.endswith("+sentinel"):
        return _sentinel_master(parse_sentinel(url))
    if scheme.endswith("+cluster"):
        return _cluster(parse_cluster(url))  # type: ignore[return-value]  # the same commands
    # A blocking pool: with hundreds of threads in flight a task waits for a free connection
    # instead of failing with MaxConnectionsError (redis-py's default pool raises at 100).
    pool = BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT,
        health_check_interval=30, retry_on_timeout=True,
        connection_class=LeanConnection,  # redis:// only: a rediss:// or unix:// URL picks its own
        driver_info=DRIVER,
    )
    return Redis.from_pool(pool)


def _sentinel_master(s: SentinelURL) -> Redis:
    common = dict(socket_timeout=SENTINEL_SOCKET_TIMEOUT, socket_connect_timeout=2.0)
    sentinel = Sentinel(s.hosts, sentinel_kwargs={**common, "ssl": s.tls}, **common)
    return sentinel.master_for(
        s.service, redis_class=Redis, db=s.db, username=s.username, password=s.password, ssl=s.tls,
        health_check_interval=30, retry_on_timeout=True, max_connections=REDIS_CONNECTIONS,
        driver_info=DRIVER,
    )


def _cluster(c: ClusterURL) -> RedisCluster:
    # A read timeout as with Sentinel: a node frozen mid-failover keeps its connections open.
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in c.hosts],
        username=c.username, password=c.password, ssl=c.tls, max_connections=REDIS_CONNECTIONS,
        socket_timeout=SENTINEL_SOCKET_TIMEOUT, socket_connect_timeout=2.0, driver_info=DRIVER,
    )
    # RedisCluster takes no connection class: it is set where its nodes read it
    connection_class = ClusterSSLConnection if c.tls else ClusterConnection
    client.connection_kwargs["connection_class"] = connection_class
    for node in client.startup_nodes:
        node.connection_class = connection_class
    return client


def is_cluster(redis: Redis | RedisCluster) -> bool:
    return isinstance(redis, RedisCluster)


async def on_slot_master(redis: Redis, key: str, *commands: tuple) -> list:
    """Run `commands` pipelined on one connection to the master of `key`'s slot, and nothing
    else in between: WAIT counts the replicas that acknowledged its own connection's writes, so
    it must follow the write on that very connection (redis-py's cluster pipeline may resend a
    command elsewhere). A reply that is an error (MOVED: the slot moved meanwhile) is raised."""
    if not isinstance(redis, RedisCluster):
        pipe = redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()
    await redis.initialize()
    node = redis.get_node_from_key(key)
    queued = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
    await node.execute_pipeline(queued)
    for command in queued:
        if isinstance(command.result, MovedError):
            await redis.nodes_manager.move_slot(command.result)  # the next try goes there
        if isinstance(command.result, Exception):
            raise command.result
    return [command.result for command in queued]


async def check_server(redis: Redis) -> None:
    """Refuse at start what no retry can fix (ConfigError, one line naming REDIS_URL): a wrong
    password, or a Redis Cluster node given as a plain URL (or the reverse). An unreachable Redis
    is not an error here: the processes wait for it."""
    if isinstance(redis, RedisCluster):
        return await _check_cluster(redis)
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
                          "cannot use: use redis+cluster://host:port[,host:port...]")


async def _check_cluster(redis: RedisCluster) -> None:
    """As `check_server`, for a cluster: redis-py folds every start-up failure into one
    RedisClusterException, the node's own answer is in its chain."""
    try:
        await redis.initialize()
    except RedisClusterException as exc:
        for cause in _chain(exc):
            if "cluster support disabled" in str(cause):
                raise ConfigError("REDIS_URL: the redis+cluster:// node is a single Redis, not a "
                                  "cluster node: use redis://host:port/db") from None
            if config_error(cause) is not None:
                if redis.connection_kwargs.get("password"):
                    raise ConfigError("REDIS_URL: the Redis Cluster refused the password in "
                                      "REDIS_URL; correct it (redis+cluster://:<password>@host:port,"
                                      "...)") from None
                raise ConfigError("REDIS_URL: the Redis Cluster requires a password; add it to "
                                  "REDIS_URL (redis+cluster://:<password>@host:port,...)") from None
    except (RedisError, OSError):
        return


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


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
