"""SMTP intake throughput: mail in over loopback SMTP to its event in Redis, end to end.

The bot's real SMTP server (aiosmtpd, in one process and event loop, as `chatops smtp` runs it)
receives new-thread mails from a separate client process (smtplib, several connections, many
mails per connection, as relaying MTAs do). A mail counts once its 250 arrived, and 250 is only
sent after the thread and its event are in Redis. Uses a redis-server of its own (never a shared
one); only keys under a fresh prefix are touched and deleted.

    python -m benchmarks.smtp_intake
"""

from __future__ import annotations

import asyncio
import multiprocessing
import smtplib
import statistics
import tempfile
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path


from bot.embedded_redis import EmbeddedRedis
from bot.runtime import Runtime
from bot.settings import Settings
from channels.email import identity
from channels.email_inbound import Inbound
from channels.email_server import start_smtp

CONNECTIONS = 8
PER_CONNECTION = 250
TARGET = 300.0


def _mail(n: int, run: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"user{n % 50}@example.com"
    msg["To"] = "deploy@bench.test"
    msg["Subject"] = f"status {n}"
    msg["Message-ID"] = f"<{run}.{n}@example.com>"
    msg.set_content(f"/service_status api{n} prod\n\nThanks,\nsomeone\n\nOn Mon, bot wrote:\n> earlier text\n")
    return msg.as_bytes()


def _client(port: int, run: str, first: int, count: int, out: list[float]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for n in range(first, first + count):
            started = time.perf_counter()
            smtp.sendmail(f"user{n % 50}@example.com", ["deploy@bench.test"], _mail(n, run))
            out.append(time.perf_counter() - started)


def _clients(port: int, run: str, results: multiprocessing.Queue) -> None:
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    threads = [threading.Thread(target=_client, args=(port, run, i * PER_CONNECTION, PER_CONNECTION, latencies[i]))
               for i in range(CONNECTIONS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((time.perf_counter() - started, [x for xs in latencies for x in xs]))


def _redis_url(tmp: Path) -> tuple[str, EmbeddedRedis | None]:
    """A redis-server of the benchmark's own (AOF everysec), never a shared one."""
    embedded = EmbeddedRedis(tmp)
    return asyncio.run(embedded.start()), embedded


async def _run(url: str) -> tuple[float, list[float], int]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    settings = Settings(_env_file=None, redis_url=url, key_prefix=prefix, email_domain="bench.test",
                        signing_key="bench-key", smtp_port=0, policy_file=None)
    rt = await Runtime.start(settings)
    server = await start_smtp(rt, Inbound(rt, identity(settings)), port=0)
    port = server.sockets[0].getsockname()[1]
    results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(target=_clients, args=(port, uuid.uuid4().hex, results))
    proc.start()
    loop = asyncio.get_running_loop()
    elapsed, latencies = await loop.run_in_executor(None, results.get)
    await loop.run_in_executor(None, proc.join)
    threads = await rt.redis.zcard(rt.store.keys.threads)
    server.close()
    await server.wait_closed()
    keys = [k async for k in rt.redis.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await rt.redis.delete(*keys[i:i + 500])
    await rt.close()
    return elapsed, latencies, threads


def main() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="chatops-bench-") as tmp:
        url, embedded = _redis_url(Path(tmp))
        try:
            elapsed, latencies, stored = asyncio.run(_run(url))
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())
    sent = CONNECTIONS * PER_CONNECTION
    if stored != sent:
        raise SystemExit(f"only {stored} of {sent} mails reached Redis")
    latencies.sort()
    rate = sent / elapsed
    note = f"{sent} mails, {CONNECTIONS} connections, loopback, each 250 after the event is in Redis"
    return [
        {"metric": "SMTP intake (msgs/s)", "ours": round(rate, 1), "target": f">= {TARGET:.0f}",
         "ok": rate >= TARGET, "notes": note},
        {"metric": "SMTP intake latency p50 (ms)", "ours": round(statistics.median(latencies) * 1000, 2),
         "target": "-", "notes": "one mail: MAIL, RCPT, DATA to 250"},
        {"metric": "SMTP intake latency p99 (ms)", "ours": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
         "target": "-", "notes": ""},
    ]


if __name__ == "__main__":
    for row in main():
        print(row)
