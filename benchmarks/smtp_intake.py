"""SMTP intake throughput: mail in over loopback SMTP to its event in Redis, end to end.

The bot's real SMTP server (aiosmtpd, in one process and event loop, as `chatops smtp` runs it)
receives mails from a separate client process (smtplib, several connections, many mails per
connection, as relaying MTAs do): replies as real clients write them (the bodies of our corpus,
tests/email_replies: Gmail, Outlook, Apple Mail, Thunderbird, ... in 15 languages), each one a
new thread. A mail counts once its 250 arrived, and 250 is only sent after the thread and its
event are in Redis. Then, while one 8 MB mail is received and parsed, a ticker on the server's
event loop records the loop's longest block. Uses a redis-server of its
own (never a shared one); only keys under a fresh prefix are touched and deleted.

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
from bot.wiring import default_wiring
from channels.email.app import inbound
from channels.email.channel import EmailChannel
from channels.email.server import start_smtp
from channels.email.settings import EmailSettings

CONNECTIONS = 8
PER_CONNECTION = 250
TARGET = 300.0
BLOCK_TARGET_MS = 50.0
TICK = 0.002  # the ticker's sleep: a block is a gap between ticks beyond it


def _mail(n: int, run: str) -> bytes:
    from tests.email_replies.corpus import CASES

    msg = EmailMessage()
    msg["From"] = f"user{n % 50}@example.com"
    msg["To"] = "deploy@bench.test"
    msg["Subject"] = f"status {n}"  # not "Re:": each reply starts a thread, so each is stored
    msg["Message-ID"] = f"<{run}.{n}@example.com>"
    body = CASES[n % len(CASES)].body
    msg.set_content(body if body.strip() else "(empty)\n")
    return msg.as_bytes()


def _big_mail(run: str) -> bytes:
    line = "a line of a very long mail that someone pasted into a request, with words and 1234\r\n"
    head = (f"From: big@example.com\r\nTo: deploy@bench.test\r\nSubject: big\r\nMessage-ID: <{run}.big@example.com>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n/service_status api prod\r\n")
    return head.encode() + (line * (8 * 1024 * 1024 // len(line))).encode()


def _send_big(port: int, path: str, results: multiprocessing.Queue) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as smtp:
        smtp.sendmail("big@example.com", ["deploy@bench.test"], Path(path).read_bytes())
    results.put(True)


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


async def _longest_block(port: int, tmp: str) -> float:
    """The event loop's longest block (s) while one 8 MB mail is received and parsed."""
    path = Path(tmp) / "big.eml"
    path.write_bytes(_big_mail(uuid.uuid4().hex))
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    proc = ctx.Process(target=_send_big, args=(port, str(path), results))
    loop = asyncio.get_running_loop()
    longest = 0.0
    proc.start()
    waiting = loop.run_in_executor(None, results.get)
    last = time.perf_counter()
    while not waiting.done():
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        longest = max(longest, now - last - TICK)
        last = now
    await waiting
    await loop.run_in_executor(None, proc.join)
    return longest


async def _run(url: str, tmp: str) -> tuple[float, list[float], int, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    # a few senders start every thread: the per-requester throttle (CHATOPS_REQUESTS_PER_HOUR) is off
    settings = Settings(_env_file=None, redis_url=url, key_prefix=prefix, signing_key="bench-key",
                        policy_file=None, requests_per_hour=10**9)
    email = EmailSettings(_env_file=None, email_domain="bench.test", smtp_port=0)
    rt = await Runtime.start(settings, default_wiring([EmailChannel(email)]))
    server = await start_smtp(email, inbound(rt, email), port=0)
    port = server.sockets[0].getsockname()[1]
    results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(target=_clients, args=(port, uuid.uuid4().hex, results))
    proc.start()
    loop = asyncio.get_running_loop()
    elapsed, latencies = await loop.run_in_executor(None, results.get)
    await loop.run_in_executor(None, proc.join)
    threads = await rt.redis.zcard(rt.store.keys.threads)
    longest = await _longest_block(port, tmp)
    server.close()
    await server.wait_closed()
    keys = [k async for k in rt.redis.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await rt.redis.delete(*keys[i:i + 500])
    await rt.close()
    return elapsed, latencies, threads, longest


def main() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="chatops-bench-") as tmp:
        url, embedded = _redis_url(Path(tmp))
        try:
            elapsed, latencies, stored, longest = asyncio.run(_run(url, tmp))
        finally:
            if embedded is not None:
                asyncio.run(embedded.stop())
    sent = CONNECTIONS * PER_CONNECTION
    if stored != sent:
        raise SystemExit(f"only {stored} of {sent} mails reached Redis")
    latencies.sort()
    rate = sent / elapsed
    note = (f"{sent} replies of real clients (our corpus), {CONNECTIONS} connections, loopback, "
            "each 250 after the event is in Redis")
    block_ms = longest * 1000
    return [
        {"metric": "SMTP intake, mixed client replies (msgs/s)", "ours": round(rate, 1),
         "target": f">= {TARGET:.0f}", "ok": rate >= TARGET, "notes": note},
        {"metric": "SMTP 8 MB mail: longest event loop block (ms)", "ours": round(block_ms, 1),
         "target": f"< {BLOCK_TARGET_MS:.0f}", "ok": block_ms < BLOCK_TARGET_MS,
         "notes": "a ticker on the server's loop while another process sends one 8 MB mail"},
        {"metric": "SMTP intake latency p50 (ms)", "ours": round(statistics.median(latencies) * 1000, 2),
         "target": "-", "notes": "one mail: MAIL, RCPT, DATA to 250"},
        {"metric": "SMTP intake latency p99 (ms)", "ours": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
         "target": "-", "notes": ""},
    ]


if __name__ == "__main__":
    for row in main():
        print(row)
