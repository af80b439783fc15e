"""Real SMTP over loopback for the email tests: a sink (aiosmtpd) that receives the bot's mail,
a client (aiosmtplib) that talks to the bot's server and reports the reply codes, and builders
for the mail that real clients write."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
from aiosmtpd.smtp import SMTP


class Sink:
    """An SMTP server that keeps every mail it gets: (envelope sender, recipients, message)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []
        self.server: asyncio.Server | None = None
        self.refuse_next: list[str] = []  # replies to give to the next DATA commands

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse_next:
            return self.refuse_next.pop(0)
        msg = message_from_bytes(envelope.original_content, policy=email_policy.default)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SMTP(self, loop=loop), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def to(self, address: str) -> list[EmailMessage]:
        return [m for _f, rcpts, m in self.mails if address in rcpts]


async def deliver(port: int, raw: bytes | EmailMessage, mail_from: str, rcpts: list[str],
                  size: int | None = None) -> tuple[int, str]:
    """One SMTP transaction; the code and text of the last reply (the first refusal, if any)."""
    data = raw.as_bytes() if isinstance(raw, EmailMessage) else raw
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    await client.connect()
    try:
        await client.ehlo()
        options = [f"SIZE={size}"] if size else []
        await client.mail(mail_from, options=options)
        for rcpt in rcpts:
            await client.rcpt(rcpt)
        reply = await client.data(data)
        return reply.code, reply.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        client.close()


def header(msg, name: str) -> str:
    """A header's value without the folding whitespace of long msg-ids."""
    value = msg[name]
    return " ".join(str(value).split()) if value is not None else ""


def new_mail(frm: str, to: str, subject: str, body: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.com")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def reply_to(original: EmailMessage, frm: str, body: str, html: str | None = None,
             **headers: str) -> EmailMessage:
    """A reply as mail clients write it: to Reply-To, threaded on the original."""
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = str(original["Reply-To"])
    msg["Subject"] = "Re: " + str(original["Subject"]).removeprefix("Re: ")
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg["In-Reply-To"] = str(original["Message-ID"])
    refs = str(original.get("References", "")).split()
    msg["References"] = " ".join([*refs, str(original["Message-ID"])])
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if html is None:
        msg.set_content(body)
    else:
        msg.set_content(html, subtype="html")
    return msg


def with_headers(msg: EmailMessage, *lines: str) -> bytes:
    """The message's bytes with raw header lines on top, in order: what a relay prepends (trace
    and Authentication-Results headers), or what EmailMessage will not write (a second From)."""
    return "".join(f"{line}\r\n" for line in lines).encode() + msg.as_bytes(policy=email_policy.SMTP)


def address_of(header: object) -> str:
    text = str(header)
    return text[text.index("<") + 1:text.index(">")] if "<" in text else text


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def quoted(msg: EmailMessage) -> str:
    return "\n".join("> " + line for line in text_of(msg).splitlines())


# The reply styles of real clients, each quoting the approval mail (which mentions both words).
def gmail(verb: str, original: EmailMessage) -> str:
    return (f"{verb}\n\nOn Mon, Nov 3, 2025 at 10:02 AM chatops <bot@ops.test> wrote:\n"
            f"{quoted(original)}\n")


def outlook(verb: str, original: EmailMessage) -> str:
    return (f"{verb}\r\n\r\n________________________________\r\n"
            "From: chatops <bot@ops.test>\r\nSent: Monday, November 3, 2025 10:02 AM\r\n"
            "To: Alice <alice@example.com>\r\n"
            f"Subject: {original['Subject']}\r\n\r\n{text_of(original)}\r\n")


def iphone(verb: str, original: EmailMessage) -> str:
    return (f"{verb}\n\nSent from my iPhone\n\n"
            "> On 3 Nov 2025, at 10:02, chatops <bot@ops.test> wrote:\n>\n"
            f"{quoted(original)}\n")


def german(verb: str, original: EmailMessage) -> str:
    return (f"{verb}\n\nViele Grüße\nAlice\n\n"
            "Am Mo., 3. Nov. 2025 um 10:02 Uhr schrieb chatops <bot@ops.test>:\n"
            f"{quoted(original)}\n")


def gmail_html(verb: str, original: EmailMessage) -> str:
    import html

    body = html.escape(text_of(original)).replace("\n", "<br>")
    return (f'<div dir="ltr">{html.escape(verb)}</div><br><div class="gmail_quote">'
            '<div dir="ltr" class="gmail_attr">On Mon, Nov 3, 2025 at 10:02 AM chatops '
            '&lt;bot@ops.test&gt; wrote:<br></div><blockquote class="gmail_quote" '
            f'style="margin:0px 0px 0px 0.8ex">{body}</blockquote></div>')


_CLIENT = """
import smtplib, sys
port, path, mail_from, *rcpts = sys.argv[1:]
with smtplib.SMTP("127.0.0.1", int(port), timeout=300) as smtp:
    smtp.ehlo()
    code, text = smtp.mail(mail_from)
    for rcpt in rcpts:
        if code < 400:
            code, text = smtp.rcpt(rcpt)
    if code < 400:
        code, text = smtp.data(open(path, "rb").read())
print(code, text.decode("ascii", "replace"))
"""


async def deliver_from_process(port: int, raw: bytes, mail_from: str, rcpts: list[str], tmp) -> tuple[int, str]:
    """One SMTP transaction by smtplib in another process: a big mail's client work (reading,
    dot-stuffing, writing) then costs this process's event loop nothing."""
    import sys

    path = tmp / f"mail-{abs(hash(raw))}.eml"
    path.write_bytes(raw)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLIENT, str(port), str(path), mail_from, *rcpts,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    code, _, text = out.decode().strip().partition(" ")
    return int(code), text
