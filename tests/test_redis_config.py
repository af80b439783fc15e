"""A REDIS_URL that cannot work is refused at start in one line naming REDIS_URL, exit status 1:
an unsupported scheme, a wrong or missing password, a Redis Cluster node given as a plain URL."""

from __future__ import annotations

import pytest

from bot.redis_client import parse_sentinel
from tests.conftest import spawn_bot
from tests.redis_ha import Server


@pytest.fixture
def secured(tmp_path):
    server = Server(tmp_path / "secured", password="s3cret-pass")
    yield server
    server.stop()


def _refused(settings, **env: str) -> str:
    bot = spawn_bot(settings, "worker", **env)
    out = bot.output(timeout=90)
    assert bot.returncode == 1, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "REDIS_URL" in lines[0] and "Traceback" not in out, out
    return lines[0]


def test_unsupported_scheme(make_settings):
    line = _refused(make_settings(), REDIS_URL="memcached://127.0.0.1:11211")
    assert "memcached://" in line and "redis+sentinel://" in line


def test_wrong_password(make_settings, secured):
    line = _refused(make_settings(), REDIS_URL=f"redis://:nope@127.0.0.1:{secured.port}/0")
    assert "refused the password" in line and "nope" not in line


def test_missing_password(make_settings, secured):
    line = _refused(make_settings(), REDIS_URL=f"redis://127.0.0.1:{secured.port}/0")
    assert "requires a password" in line


def test_cluster_node_as_plain_url(make_settings, tmp_path):
    node = Server(tmp_path / "node", "cluster-enabled yes", f"cluster-config-file {tmp_path}/nodes.conf")
    try:
        line = _refused(make_settings(), REDIS_URL=f"redis://127.0.0.1:{node.port}/0")
        assert "Cluster" in line
    finally:
        node.stop()


def test_sentinel_url_parsing():
    url = parse_sentinel("rediss+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380/mymaster/2")
    assert url.hosts == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (url.service, url.db, url.password, url.tls) == ("mymaster", 2, "p@ss", True)
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h/x", "redis+sentinel://h:1/s/x/y"):
        with pytest.raises(Exception, match="REDIS_URL"):
            parse_sentinel(bad)
