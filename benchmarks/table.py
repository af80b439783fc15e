"""The one row format of `make bench`, and the table it prints.

A section is a module with `def main() -> list[dict]` (sync) or `async def run(ctx) -> list[dict]`
returning rows built here (or plain dicts with the same keys):

    {"metric": str, "ours": number|str, "target": str, optional "unit", "peer", "peer_value",
     "ratio", "met", "note"}

`target` reads like "<= 0.25 ms" or ">= 300 msg/s" (or "" for none); when a row does not say
`met` itself, it is computed by comparing `ours` with the target's number.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

Row = dict[str, Any]

_TARGET = re.compile(r"^\s*(<=|>=|≤|≥|<|>|==)\s*([0-9.]+)")
_NUMBER = re.compile(r"^\s*([0-9.]+)")


def row(
    metric: str,
    ours: float | str,
    unit: str = "",
    target: str = "",
    *,
    peer: str = "",
    peer_value: float | str = "",
    ratio: float | str = "",
    met: bool | None = None,
    note: str = "",
) -> Row:
    out: Row = {"metric": metric, "ours": ours, "unit": unit, "target": target, "peer": peer,
                "peer_value": peer_value, "ratio": ratio, "note": note}
    if met is not None:
        out["met"] = met
    return out


def note(metric: str, text: str) -> Row:
    return row(metric, "-", note=text)


def met(r: Row) -> bool | None:
    if "met" in r and r["met"] is not None:
        return bool(r["met"])
    target = _TARGET.match(str(r.get("target", "")))
    value = _NUMBER.match(str(r.get("ours", ""))) if not isinstance(r.get("ours"), (int, float)) else None
    ours = r.get("ours") if isinstance(r.get("ours"), (int, float)) else (float(value.group(1)) if value else None)
    if not target or ours is None:
        return None
    op, limit = target.group(1), float(target.group(2))
    return {
        "<=": ours <= limit, "≤": ours <= limit, "<": ours < limit,
        ">=": ours >= limit, "≥": ours >= limit, ">": ours > limit, "==": ours == limit,
    }[op]


def fmt(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit else text


def ratio(theirs: float, ours: float) -> str:
    """How many times ours is better (theirs / ours for costs)."""
    if not ours:
        return "∞"
    return f"{theirs / ours:.1f}x"


def percentiles(samples: list[float]) -> tuple[float, float]:
    """Median and p99."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered), p99


HEADERS = ("metric", "ours", "peer", "peer value", "ratio", "target", "met?")


def render(rows: list[Row]) -> str:
    cells = []
    for r in rows:
        ok = met(r)
        unit = r.get("unit", "")
        cells.append((
            str(r["metric"]),
            fmt(r.get("ours"), unit),
            str(r.get("peer", "") or ""),
            fmt(r.get("peer_value", ""), unit if isinstance(r.get("peer_value"), (int, float)) else ""),
            str(r.get("ratio", "") or ""),
            str(r.get("target", "") or ""),
            "" if ok is None else ("yes" if ok else "NO"),
        ))
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    out = [line(HEADERS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells]
    notes = [f"- {r['metric']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(out + ([""] + notes if notes else []))
