"""The embedded Redis: one server per data directory, shared by the processes that use it, shut
down by the last one to leave, its data kept across restarts."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bot.embedded_redis import EmbeddedRedis, ping


async def test_processes_starting_together_share_one_server(tmp_path):
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    urls = await asyncio.gather(first.start(), second.start())
    try:
        assert urls[0] == urls[1]
        assert [r.process is not None for r in (first, second)].count(True) == 1
    finally:
        await first.stop()
        await second.stop()
    assert not await ping(urls[0])


async def test_the_last_user_shuts_it_down_and_the_data_survives(tmp_path):
    starter, adopter = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    url = await starter.start()
    assert await adopter.start() == url
    client = Redis.from_url(url)
    await client.set("kept", "yes")
    await client.aclose()

    await starter.stop()  # the adopter still uses it: it must keep running
    assert await ping(url)
    await adopter.stop()
    assert not await ping(url) and not (tmp_path / "redis.url").exists()

    again = EmbeddedRedis(tmp_path)
    client = Redis.from_url(await again.start())
    try:
        assert await client.get("kept") == b"yes"  # from the AOF
    finally:
        await client.aclose()
        await again.stop()


async def test_a_url_file_pointing_at_another_server_is_not_trusted(tmp_path, redis_url):
    (tmp_path / "redis.url").write_text(redis_url)  # some other Redis now holds that address
    embedded = EmbeddedRedis(tmp_path)
    url = await embedded.start()
    try:
        assert url != redis_url and embedded.process is not None
    finally:
        await embedded.stop()


def test_started_and_stopped_from_two_event_loops(tmp_path):
    """As the test suite's fallback Redis and the benchmarks use it: asyncio.run twice."""
    embedded = EmbeddedRedis(tmp_path)
    url = asyncio.run(embedded.start())
    asyncio.run(embedded.stop())
    assert not asyncio.run(ping(url))


async def test_a_port_taken_by_another_redis_is_not_adopted(tmp_path, redis_url):
    """A port picked by binding and released can be taken before redis-server binds it: the
    server that answers there is another's (its data elsewhere), and ours must not claim it."""
    other = Redis.from_url(redis_url)
    port = other.connection_pool.connection_kwargs.get("port")
    await other.aclose()
    if port is None:  # the tests' Redis is on a Unix socket: take a port with a server of our own
        taker = EmbeddedRedis(tmp_path / "taker")
        url = await taker.start()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    else:
        taker = None
    try:
        ours = EmbeddedRedis(tmp_path / "ours")
        assert await ours._spawn_on(port) is None
        assert ours.process is not None and ours.process.poll() is not None  # not left behind
        url = await ours.start()  # and a start finds a port of its own
        assert f":{port}/" not in url
        await ours.stop()
    finally:
        if taker is not None:
            await taker.stop()
