"""Real parts for tests: a real Redis server, the real anthropic client against a local Messages
API server, the real worker. Every test gets its own key prefix and deletes only its own keys."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from bot.embedded_redis import EmbeddedRedis
from bot.runtime import Runtime
from bot.settings import Settings
from bot.wiring import Wiring, default_wiring
from bot.worker import Worker
from channels.console import ConsoleChannel
from channels.email.channel import EmailChannel
from channels.email.settings import EmailSettings
from channels.schedule import ScheduleChannel
from channels.slack.channel import SlackChannel
from channels.slack.settings import SlackSettings
from tests.messages_api import MessagesAPI
from tests.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parent.parent


def _reachable(url: str) -> bool:
    try:
        return bool(sync_redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The machine's Redis at 127.0.0.1:6379 if one runs, else the project's embedded Redis."""
    url = os.environ.get("CHATOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _reachable(url):
        yield url
        return
    data = Path(tempfile.mkdtemp(prefix="chatops-redis-"))
    embedded = EmbeddedRedis(data)
    url = asyncio.run(embedded.start())
    yield url
    asyncio.run(embedded.stop())
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = sync_redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def messages_api() -> Iterator[MessagesAPI]:
    with MessagesAPI() as api:
        yield api


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "chatops.toml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def make_settings(redis_url: str, prefix: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            redis_url=redis_url, key_prefix=prefix, data_dir=tmp_path / "data", policy_file=None,
            anthropic_api_key=None, anthropic_base_url=None, api_token=None, signing_key="test-signing-key",
            lease_ttl=5.0, claim_idle=2.0, sweep_interval=0.2, model_retries=2, model_timeout=5.0,
            shutdown_grace=1.0,
        )
        values.update(overrides)
        # the core's settings ignore unknown names (a .env holds the channels' too): a channel's
        # setting given here would be lost silently, it belongs in `make_wiring`
        unknown = sorted(set(values) - set(Settings.model_fields))
        assert not unknown, f"not core settings: {unknown} (a channel's go to make_wiring)"
        return Settings(_env_file=None, **values)

    return make


def make_wiring(slack: SlackSettings | dict[str, Any] | None = None,
                email: EmailSettings | dict[str, Any] | None = None) -> Wiring:
    """The shipped channels and agents, each channel with the settings given here (a model, or
    its fields by name: the rest from the environment, never from a `.env`, as `make_settings`
    reads the core's)."""
    if not isinstance(slack, SlackSettings):
        slack = SlackSettings(_env_file=None, **(slack or {}))
    if not isinstance(email, EmailSettings):
        email = EmailSettings(_env_file=None, **(email or {}))
    return default_wiring([SlackChannel(slack), EmailChannel(email), ScheduleChannel(), ConsoleChannel()])


def email_fields(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`overrides` split into the core's settings and the email channel's (by field name)."""
    email = {k: v for k, v in overrides.items() if k in EmailSettings.model_fields}
    return {k: v for k, v in overrides.items() if k not in email}, email


@pytest.fixture
def model_settings(make_settings: Callable[..., Settings], messages_api: MessagesAPI) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return make_settings(anthropic_api_key="test-key", anthropic_base_url=messages_api.url, **overrides)

    return make


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, to pause or stop (never the shared one)."""
    server = RedisProcess(tmp_path / "own-redis")
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def runtime() -> AsyncIterator[Callable[[Settings], Awaitable[Runtime]]]:
    """Start a runtime without a worker (the test plays a channel, or workers run elsewhere)."""
    started: list[Runtime] = []

    async def start(settings: Settings, wiring: Wiring | None = None) -> Runtime:
        rt = await Runtime.start(settings, wiring or make_wiring())
        started.append(rt)
        return rt

    yield start
    for rt in started:
        await rt.close()


@pytest.fixture
async def start_bot() -> AsyncIterator[Callable[[Settings], Awaitable[Runtime]]]:
    """Start a runtime and an in-process worker for given settings (and the channels and agents
    of `make_wiring()`, unless a test passes its own `Wiring`)."""
    started: list[tuple[Runtime, asyncio.Task]] = []

    async def start(settings: Settings, wiring: Wiring | None = None) -> Runtime:
        rt = await Runtime.start(settings, wiring or make_wiring())
        worker = Worker(rt)
        await worker.inbox.ensure_group()
        started.append((rt, asyncio.create_task(worker.run())))
        return rt

    yield start
    for rt, task in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """Serve an ASGI app with a real uvicorn on a free loopback port; returns its base URL."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def start(app: Any) -> str:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                               lifespan="off"))
        task = asyncio.create_task(server.serve())
        await wait_for(lambda: _started(server), 10, "uvicorn to start")
        servers.append((server, task))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server, task in servers:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


async def _started(server: Any) -> bool:
    return bool(server.started)


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def settled(rt: Runtime, thread_id: str, timeout: float = 10.0):
    """The thread once it waits for a human or is idle."""
    async def check():
        thread = await rt.store.load(thread_id)
        return thread if thread.state != "working" else None

    return await wait_for(check, timeout, f"thread {thread_id} to settle")


def bot_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a bot subprocess with the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "ANTHROPIC_"))}
    env.update({
        "REDIS_URL": settings.redis_url or "",
        "CHATOPS_KEY_PREFIX": settings.key_prefix,
        "CHATOPS_DATA_DIR": str(settings.data_dir),
        "CHATOPS_LEASE_TTL": str(settings.lease_ttl),
        "CHATOPS_CLAIM_IDLE": str(settings.claim_idle),
        "CHATOPS_SWEEP_INTERVAL": str(settings.sweep_interval),
        "CHATOPS_SHUTDOWN_GRACE": str(settings.shutdown_grace),
        "CHATOPS_SIGNING_KEY": "test-signing-key",
        "CHATOPS_SMTP_PORT": "0",  # `chatops run` listens for mail: never on a fixed port in tests
        # a doctor check that starts an MCP server takes seconds on a loaded machine
        "CHATOPS_DOCTOR_TIMEOUT": "60",
        "PYTHONPATH": str(ROOT),
    })
    if settings.policy_file:
        env["CHATOPS_POLICY"] = str(settings.policy_file)
    if settings.anthropic_api_key:
        env["ANTHROPIC_API_KEY"] = settings.anthropic_api_key.get_secret_value()
        env["ANTHROPIC_BASE_URL"] = settings.anthropic_base_url or ""
    env.update(extra)
    return env


class Bot(subprocess.Popen):
    """A `chatops` subprocess whose output goes to a file (a pipe nobody reads would block it)."""

    log_path: Path

    def output(self, timeout: float = 10) -> str:
        """Everything it printed, once it has exited."""
        self.wait(timeout)
        return self.log_path.read_text(errors="replace")

    async def port(self, service: str, timeout: float = 60) -> int:
        """The port `service` ("HTTP API" or "SMTP server") logged it listens on: tests start
        bots on port 0, as a port picked by binding and releasing it could be taken meanwhile."""
        pattern = re.compile(re.escape(service) + r" on (?:http://)?[^\s]+:(\d+)")

        async def logged():
            if self.poll() is not None:
                raise AssertionError(f"the bot exited: {self.log_path.read_text(errors='replace')}")
            found = pattern.search(self.log_path.read_text(errors="replace"))
            return int(found[1]) if found else None

        return await wait_for(logged, timeout, f"the {service} port in {self.log_path}")


def spawn_bot(settings: Settings, *args: str, **extra: str) -> Bot:
    """`chatops <args>` in a subprocess; its output goes to a log file in the data directory."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / f"bot-{uuid.uuid4().hex[:6]}.log"
    with open(path, "wb") as log:
        proc = Bot(
            [sys.executable, "-m", "bot", *args], env=bot_env(settings, **extra), cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    proc.log_path = path
    return proc


@pytest.fixture(autouse=True)
async def no_stray_tasks() -> AsyncIterator[None]:
    """After each test, stop the tasks it left behind; name any that will not stop (a hang at
    event-loop teardown says nothing about which task caused it)."""
    before = asyncio.all_tasks()
    yield
    stray = asyncio.all_tasks() - before - {asyncio.current_task()}
    for task in stray:
        task.cancel()
    _, alive = await asyncio.wait(stray, timeout=10) if stray else (set(), set())
    if alive:
        stacks = "\n".join(f"{t.get_name()}: {t.get_coro()!r}\n{t.get_stack()}" for t in alive)
        pytest.fail(f"tasks that ignore cancellation:\n{stacks}")
