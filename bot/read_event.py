"""The built-in tool every agent has for its thread's history: `read_event` returns an event of
the thread in full (a tool output the context shows truncated, or one compacted into the
summary), in pieces that fit in one tool result."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bot.events import ToolResult, dump_event
from bot.tools import Tool, ToolContext, ToolError

PIECE = 1500  # characters per call: under the smallest tool output limit, so never cut again


class ReadEventArgs(BaseModel):
    event_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,80}$",
                          description="The id of an event of this thread (e.g. from the summary).")
    offset: int = Field(0, ge=0, description="Where to start reading, in characters.")


async def _read(args: ReadEventArgs, ctx: ToolContext) -> str:
    if ctx.store is None:
        raise ToolError("the thread's log is not available")
    event = await ctx.store.find_event(ctx.thread_id, args.event_id)
    if event is None:
        raise ToolError(f"no event {args.event_id} in this thread")
    content = event.output if isinstance(event, ToolResult) else getattr(event, "text", None)
    content = content if content is not None else dump_event(event)
    piece = content[args.offset:args.offset + PIECE]
    rest = len(content) - args.offset - len(piece)
    more = f"\n[… {rest} more characters: read_event with offset={args.offset + len(piece)}]" if rest > 0 else ""
    return f"[{event.type} {event.id}, characters {args.offset}–{args.offset + len(piece)} of {len(content)}]\n{piece}{more}"


READ_EVENT = Tool(
    name="read_event",
    description="Read an earlier event of this conversation in full, by its id: a tool output shown "
                "truncated, or anything the summary of older events mentions.",
    args=ReadEventArgs,
    handler=_read,
)
