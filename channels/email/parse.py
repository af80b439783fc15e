"""Inbound mail as the bot needs it: who sent it, what they newly wrote, what it answers.

Parsing never raises on bad input: broken MIME, unknown or wrong charsets and binary garbage give
a best-effort `Mail` (with `defects`), and a mail without a sender address is `None`.

The work is bounded whatever the mail's size: the MIME parser is fed in small pieces, only the
first MAX_ENCODED characters of a text part are decoded and MAX_BODY characters of text are
read for the new text; attachments are measured, not decoded. It is still CPU work: the SMTP
server runs `parse` in a worker thread (see inbound.py).
"""

from __future__ import annotations

import binascii
import hashlib
import quopri
import re
from dataclasses import dataclass, field
from email import policy as email_policy
from email.feedparser import BytesFeedParser
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import getaddresses
from html.parser import HTMLParser

import authres

from channels.email import reply as email_reply
from channels.email.reply import first_line

_MSG_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
APPROVE_WORDS = frozenset({"approve", "approved", "yes", "lgtm"})
REJECT_WORDS = frozenset({"reject", "rejected", "no", "deny", "denied"})
# the decision words that rarely open ordinary prose ("No deploys today, please check api")
UNMISTAKABLE_WORDS = (APPROVE_WORDS | REJECT_WORDS) - {"yes", "no"}
_RULE = re.compile(r"[_\-=]{10,}")
_APPROVAL_ID = re.compile(r"^[0-9a-f]{16}\.[0-9a-f]{8}$")
_AUTOMATIC_LOCALS = ("mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply")
MAX_TEXT = 20_000  # what the model may see of one mail
MAX_BODY = 256 * 1024  # characters of text (plain, or HTML) read for the new text
MAX_ENCODED = 1024 * 1024  # characters of a text part decoded (quoted-printable may triple)
FEED_CHUNK = 64 * 1024  # bytes handed to the MIME parser at a time (keeps each C call short)


@dataclass(frozen=True)
class Attachment:
    name: str
    type: str
    size: int

    def describe(self) -> str:
        return f"{self.name} ({self.type}, {_size(self.size)})"


@dataclass
class Mail:
    sender: str  # the From address, lower-cased: the email "user" identity
    sender_name: str
    subject: str
    message_id: str | None  # with angle brackets, as it appears in In-Reply-To
    in_reply_to: list[str]
    references: list[str]
    text: str  # the new text: quoted history, signatures and disclaimers stripped
    attachments: list[Attachment]
    external_id: str  # the Message-ID, or a hash of the content when there is none
    automatic: str | None  # why it is automatic mail, or None
    single_from: bool = True  # exactly one From header with exactly one address
    dmarc: dict[str, str] = field(default_factory=dict)  # authserv-id -> dmarc result (topmost header)
    defects: list[str] = field(default_factory=list)

    @property
    def answered_ids(self) -> list[str]:
        """The message ids this mail answers, most direct first."""
        seen: list[str] = []
        for mid in [*self.in_reply_to, *reversed(self.references)]:
            if mid not in seen:
                seen.append(mid)
        return seen


def parse(raw: bytes, envelope_sender: str | None) -> Mail | None:
    try:
        msg = _message(raw)
    except Exception:  # the parser is lenient; this is for the truly pathological
        return None
    sender, name = _from(msg)
    if not sender:
        return None
    defects = [type(d).__name__ for d in getattr(msg, "defects", [])]
    plain, html, attachments = _walk(msg, defects)
    body = plain[:MAX_BODY] if plain.strip() else html_to_text(html[:MAX_BODY])
    message_id = _first(msg_ids(_header(msg, "Message-ID")))
    return Mail(
        sender=sender,
        sender_name=name,
        subject=" ".join(_header(msg, "Subject").split())[:300],
        message_id=message_id,
        in_reply_to=msg_ids(_header(msg, "In-Reply-To")),
        references=msg_ids(_header(msg, "References")),
        text=new_text(body)[:MAX_TEXT],
        attachments=attachments,
        external_id=message_id or f"sha256:{content_hash(msg, raw)}",
        automatic=automatic(msg, envelope_sender, sender),
        single_from=single_from(msg),
        dmarc=dmarc_results(msg, sender.rpartition("@")[2]),
        defects=defects,
    )


def _message(raw: bytes) -> Message:
    # compat32: the header registry of the modern policy costs more than all the rest
    parser = BytesFeedParser(policy=email_policy.compat32)
    for start in range(0, len(raw), FEED_CHUNK):
        parser.feed(raw[start:start + FEED_CHUNK])
    return parser.close()


def msg_ids(value: str) -> list[str]:
    """Message ids in a References / In-Reply-To value (parsed by hand: see REFERENCE.md)."""
    return [f"<{m}>" for m in _MSG_ID.findall(value)]


def _first(items: list[str]) -> str | None:
    return items[0] if items else None


def _header(msg: Message, name: str) -> str:
    """A header's text with RFC 2047 words decoded; never raises on a broken header."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(value))) if "=?" in str(value) else _text(value)
    except Exception:
        return _text(value)


def _text(value: object) -> str:
    if isinstance(value, Header):  # compat32 hands 8-bit headers over as Header objects
        return "".join(_bytes_text(part, charset) if isinstance(part, bytes) else part
                       for part, charset in decode_header(value))
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bytes_text(data: bytes, charset: str | None, defects: list[str] | None = None) -> str:
    """Text in its declared charset if that works, else UTF-8, else cp1252; never raises."""
    charset = charset or "utf-8"
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        if defects is not None:
            defects.append(f"not valid {charset!r}")
    except Exception:  # LookupError, and ValueError for a name with a NUL ("utf-8\0")
        if defects is not None:
            defects.append(f"unknown charset {charset!r}")
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # never fails; the words may look odd but nothing is lost


def _from(msg: Message) -> tuple[str, str]:
    value = _text(msg.get("From") or "")  # split before decoding: a decoded name may hold commas
    addresses = [(n, a) for n, a in getaddresses([value]) if "@" in a]
    if not addresses:
        return "", ""
    name, address = addresses[0]
    try:
        name = str(make_header(decode_header(name))) if "=?" in name else name
    except Exception:
        pass
    return address.strip().lower(), name.strip()


def single_from(msg: Message) -> bool:
    """Whether the mail names exactly one author: one From header holding one address. With
    more, which of them DMARC checked is anyone's guess, so such a mail decides nothing."""
    values = msg.get_all("From", failobj=[])
    if len(values) != 1:
        return False
    return len([a for _n, a in getaddresses([_text(values[0])]) if a.strip()]) == 1


def _walk(msg: Message, defects: list[str]) -> tuple[str, str, list[Attachment]]:
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        if disposition == "attachment" or filename or not ctype.startswith("text/"):
            attachments.append(Attachment(_clean_name(filename or "unnamed"), ctype, _encoded_size(part)))
            continue
        text = _decode(part, defects)
        if ctype == "text/html":
            html.append(text)
        else:
            plain.append(text)
    return "\n".join(plain), "\n".join(html), attachments


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
        return _text(name) if name is not None else None
    except Exception:
        return "unnamed"


def _clean_name(name: str) -> str:
    """A file name fit for a one-line note: no control characters, at most 100 characters."""
    return "".join(c if c.isprintable() else "?" for c in " ".join(name.split()))[:100] or "unnamed"


def _cte(part: Message) -> str:
    return str(part.get("Content-Transfer-Encoding", "")).strip().lower()


def _encoded_size(part: Message) -> int:
    """The decoded size of a part, from its encoded length (decoding megabytes to count them
    would be wasted work)."""
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return 0
    if _cte(part) == "base64":
        chars = len(payload) - payload.count("\n") - payload.count("\r") - payload.count(" ")
        return max(chars * 3 // 4 - payload.rstrip().count("=", -2), 0)
    return len(payload)


def _raw_payload(part: Message) -> object:
    # the payload as parsed, 8-bit bytes as surrogates: get_payload() would decode all of it in
    # the declared charset (and raise on "utf-8\0"), only to have it encoded back
    return getattr(part, "_payload", None)


def _payload(part: Message) -> bytes:
    """At most MAX_ENCODED characters of the part's payload, decoded; never raises."""
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return b""
    cut = payload[:MAX_ENCODED]
    data = cut.encode("ascii", "surrogateescape")  # compat32 keeps 8-bit bytes as surrogates
    cte = _cte(part)
    try:
        if cte == "base64":
            clean = b"".join(data.split())
            return binascii.a2b_base64(clean[:len(clean) // 4 * 4])
        if cte == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return b""
    return data


def _decode(part: Message, defects: list[str]) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _bytes_text(_payload(part), charset, defects)


class _Text(HTMLParser):
    """HTML to text: blocks become lines, blockquotes become `> ` quotes (so they are stripped)."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre"}
    SKIP = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.depth = 0  # blockquote nesting
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "blockquote":
            self._newline()
            self.depth += 1
        elif tag == "hr":
            self._newline()
            self.lines[-1] = "_" * 32
            self._newline()
        elif tag in self.BLOCKS:
            self._newline()
        elif tag in ("td", "th"):
            self.lines[-1] += " "

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "blockquote":
            self.depth = max(0, self.depth - 1)
            self._newline()
        elif tag in self.BLOCKS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        text = " ".join(data.split())
        if not text:
            return
        if not self.lines[-1]:
            self.lines[-1] = "> " * self.depth
        elif not self.lines[-1].endswith(" "):
            self.lines[-1] += " "
        self.lines[-1] += text

    def _newline(self) -> None:
        if self.lines[-1].strip():
            self.lines.append("")


def html_to_text(html: str) -> str:
    if not html.strip():
        return ""
    parser = _Text()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        return re.sub(r"<[^>]*>", " ", html)
    return "\n".join(line.rstrip() for line in parser.lines).strip()


def new_text(body: str) -> str:
    """What the sender wrote in this mail: without quoted history, attribution lines and
    signatures (see reply.py)."""
    return email_reply.new_text(body[:MAX_BODY])


@dataclass(frozen=True)
class Decision:
    approve: bool
    reason: str
    approval_id: str | None  # named in the mail ("approve <id>"), else None
    ambiguous: bool = False  # the first line also holds the opposite word ("yes, but no")


def decision(text: str) -> Decision | None:
    """An approval decision if the first words of the new text's first line are one; the reason
    is the rest of the new text."""
    line = first_line(text)
    words = line.split(maxsplit=1)
    if not words:
        return None
    verb = words[0].strip(".,!:;*_").lower()
    if verb not in APPROVE_WORDS | REJECT_WORDS:
        return None
    approve = verb in APPROVE_WORDS
    rest = text.strip().split(maxsplit=1)[1:]  # the reason may go on below the first line
    rest = rest[0].split(maxsplit=1) if rest else []
    approval_id = None
    if rest and _APPROVAL_ID.match(rest[0].strip(".,:;").lower()):
        approval_id = rest.pop(0).strip(".,:;").lower()
    reason = " ".join(" ".join(rest).split()).lstrip(".,:;-– ").strip()
    return Decision(approve, reason[:500], approval_id, _contradicts(line, approve))


_WORD = re.compile(r"[^\W\d_]+|[.,;:!?]", re.UNICODE)


def _contradicts(line: str, approve: bool) -> bool:
    """Whether the line also says the opposite: an unmistakable opposite word anywhere, or a
    bare "yes"/"no" that stands alone as a clause ("yes, but no"; "no, yes."), not "no problem"."""
    tokens = [t.lower() for t in _WORD.findall(line)][1:]
    opposite = REJECT_WORDS if approve else APPROVE_WORDS
    for i, token in enumerate(tokens):
        if token in opposite - {"yes", "no"}:
            return True
        if token in opposite and (i + 1 == len(tokens) or not tokens[i + 1].isalpha()):
            return True
    return False


def automatic(msg: Message, envelope_sender: str | None, sender: str) -> str | None:
    """Why this mail is automatic (an auto-reply, a bounce, a list), or None for a person's mail."""
    if envelope_sender in (None, "", "<>"):
        return "empty envelope sender (a bounce)"
    value = _header(msg, "Auto-Submitted").strip().lower()
    if value and value.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {value}"
    precedence = _header(msg, "Precedence").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    for name in ("List-Id", "List-Unsubscribe", "X-Autoreply", "X-Autorespond",
                 "X-Auto-Response-Suppress", "Feedback-ID"):
        if msg.get(name) is not None:
            return f"{name} header"
    if msg.get_content_type() == "multipart/report":
        return "a delivery or disposition report"
    for address in (sender, (envelope_sender or "").lower()):
        local = address.split("@", 1)[0]
        if local.startswith(_AUTOMATIC_LOCALS):
            return f"sent by {address}"
    return None


def dmarc_results(msg: Message, from_domain: str | None = None) -> dict[str, str]:
    """authserv-id -> the dmarc result of the topmost Authentication-Results header of that
    authserv-id: `pass`, `fail`, `none`, ... (RFC 8601, parsed by authres), `absent` when that
    header has no dmarc result and `permerror` when it cannot be parsed. Several dmarc results in
    one header give the first that is not `pass`.

    Only the header of a trusted authserv-id may be believed (see the channel's settings); the
    topmost one is the one our own MTA added last, and the others are ignored. With `from_domain`,
    a pass whose `header.from` names another domain is `header.from-mismatch`: it vouches for
    some other author than the From address we read.
    """
    out: dict[str, str] = {}
    for value in msg.get_all("Authentication-Results", failobj=[]):
        text = " ".join(_text(value).split())  # unfolded
        try:
            header = authres.AuthenticationResultsHeader.parse_value(text)
        except Exception:  # authres raises its own SyntaxError and more on garbage
            authserv = _leading_token(text)
            if authserv:
                out.setdefault(authserv, "permerror")
            continue
        authserv = (header.authserv_id or "").lower()
        if not authserv or authserv in out:
            continue
        results = [_dmarc_result(r, from_domain) for r in header.results if str(r.method).lower() == "dmarc"]
        out[authserv] = next((r for r in results if r != "pass"), "pass") if results else "absent"
    return out


def _dmarc_result(result: object, from_domain: str | None) -> str:
    value = str(getattr(result, "result", "")).lower()
    if value != "pass" or from_domain is None:
        return value
    header_from = next((str(p.value) for p in getattr(result, "properties", [])
                        if str(p.type).lower() == "header" and str(p.name).lower() == "from"), "")
    header_from = header_from.strip().lower().rstrip(".")
    return "pass" if header_from == from_domain.lower().rstrip(".") else "header.from-mismatch"


def _leading_token(text: str) -> str:
    """The authserv-id of a header authres could not parse: its first word, comments skipped."""
    match = re.match(r"\s*(?:\([^()]*\)\s*)*([^\s;()]+)", text)
    return match.group(1).lower() if match else ""


def content_hash(msg: Message, raw: bytes) -> str:
    """A hash of what identifies a message without a Message-ID; trace headers (Received) that
    change between deliveries are left out."""
    digest = hashlib.sha256()
    for name in ("From", "To", "Cc", "Date", "Subject"):
        digest.update(_header(msg, name).encode("utf-8", "replace") + b"\0")
    head_end = raw.find(b"\r\n\r\n")
    head_end = raw.find(b"\n\n") if head_end < 0 else head_end
    digest.update(raw[head_end:] if head_end >= 0 else raw)
    return digest.hexdigest()[:32]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n} {unit}" if unit == "B" else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n} B"
