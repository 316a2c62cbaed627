"""Slash commands on the conversation: /retry /image /undo /history /usage /context /compact /save."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmchat.core.conversation import Exchange
from llmchat.core.errors import LlmchatError
from llmchat.core.images import ImageError
from llmchat.engine.context import describe
from llmchat.repl.settings import no_args
from llmchat.repl.state import Action, ReplState, UsageError


def cmd_retry(state: ReplState, args: str) -> Action | None:
    no_args(args)
    if state.refused is not None:  # the server refused the last question: it is no turn, but is asked again
        question, state.refused = state.refused, None
        return Action(ask=question)
    if not state.conversation.exchanges:
        state.say("Nothing to retry yet.")
        return None
    exchange = state.conversation.pop()
    state.pending_images.restore(exchange.images)  # asked again with the same images
    return Action(ask=exchange.user)


def cmd_image(state: ReplState, args: str) -> None:
    pending = state.pending_images
    rows = [f"{image.source} ({image.mime or 'URL'}, {_size(image.data)})" for image in pending.images()]
    if listed_or_cleared(state, args, "image", rows, pending.clear,
                         "/image PATH|URL attaches one to the next question."):
        return
    try:
        image = pending.add(args)
    except ImageError as exc:
        raise UsageError(exc.message) from None
    state.say(f"Attached {image.source} to the next question ({counted(len(pending), 'image')} in all).")


def listed_or_cleared(state: ReplState, args: str, noun: str, rows: list[str], clear: Callable[[], object],
                      usage: str) -> bool:
    """What /image and /file share: `clear` drops what is attached, no argument lists it (one row each).
    False when `args` is something to attach, which the command does itself."""
    if args.lower() == "clear":
        clear()
        state.say(f"Dropped {counted(len(rows), noun)}." if rows else f"No {noun}s were attached.")
        return True
    if args:
        return False
    if not rows:
        state.say(f"No {noun}s attached; {usage}")
    else:
        state.say("\n".join([f"Attached to the next question ({counted(len(rows), noun)}):",
                             *(f"  {row}" for row in rows)]))
    return True


def counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _size(data: bytes | None) -> str:
    if data is None:
        return "fetched by the server"
    return f"{len(data):,} bytes" if len(data) < 10_000 else f"{len(data) / 1024:,.0f} KB"


def cmd_undo(state: ReplState, args: str) -> None:
    no_args(args)
    if not state.conversation.exchanges:
        state.say("Nothing to undo.")
        return
    exchange = state.conversation.pop()
    if state.store is not None:
        state.store.truncate(state.conversation)  # the saved copy forgets it too
    state.say(f"Removed the last exchange: {_short(exchange.user, 60)}")


def cmd_history(state: ReplState, args: str) -> None:
    no_args(args)
    exchanges = state.conversation.exchanges
    if not exchanges:
        state.say("No turns yet in this conversation.")
        return
    lines = [f"System: {_short(state.conversation.system, 70)}"] if state.conversation.system else []
    first = state.conversation.first_sent()
    if first:
        summary = state.conversation.active_summary()
        how = "no longer sent" if summary is None else (
            "summarised" if summary.covers >= first else "summarised or no longer sent")
        lines.append(f"(turns 1-{first} are {how} to fit the context window; /context shows what is sent)")
    for number, exchange in enumerate(exchanges, 1):
        lines.append(f"{number:>3}. you: {_short(exchange.user, 70)}")
        lines.append(f"     {exchange.model or 'model'}: {_short(exchange.answer, 70)}{_status(exchange)}")
    state.say("\n".join(lines))


def _status(exchange: Exchange) -> str:
    if exchange.interrupted:
        return " [interrupted]"
    return "" if exchange.answer else " [failed: not sent again]"


def _short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cmd_usage(state: ReplState, args: str) -> None:
    no_args(args)
    t = state.totals
    if not t.turns:
        state.say("No turns yet.")
        return
    calls = f"{t.turns} turn{'s' * (t.turns != 1)}"
    if t.summaries:
        calls += f" + {t.summaries} summary call{'s' * (t.summaries != 1)}"
    parts = [calls, f"prompt {t.prompt:,}", f"completion {t.completion:,}"]
    if t.reasoning:
        parts[-1] += f" (reasoning {t.reasoning:,})"
    parts.append(f"total {t.prompt + t.completion:,} tokens")
    if t.costs:
        parts.append("cost " + t.cost_text())
    line = "Since start: " + " · ".join(parts)
    if t.unreported:
        line += f"\n({t.unreported} turn{'s' * (t.unreported != 1)} without a usage report not counted)"
    state.say(line)


def cmd_context(state: ReplState, args: str) -> None:
    no_args(args)
    state.say(describe(state.context(), state.conversation))


def cmd_compact(state: ReplState, args: str) -> None:
    no_args(args)
    conversation = state.conversation
    if not any(e.answer for e in conversation.exchanges[conversation.first_sent():]):
        state.say("Nothing to compact: no earlier exchange is sent verbatim.")
        return
    if state.context().compact(conversation, state.say):
        state.compacted = True
    else:
        state.say("The conversation was not compacted; it is sent as before.")


def cmd_save(state: ReplState, args: str) -> None:
    """Write the conversation in the one export format: `.json` is what `history export --format json`
    writes (and `history import` reads), `.md` what `history export --format md` writes."""
    if not args:
        raise UsageError("Give a file name ending in .md or .json.")
    path = Path(args.strip("'\"")).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".md", ".markdown", ".json"):
        raise UsageError(f"'{path.name}' must end in .md or .json, which picks the format.")
    from llmchat.engine.history import transcript_text

    record = transcript_record(state)
    text = transcript_text(record, "json" if suffix == ".json" else "md")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        state.say(f"Cannot write {path}: {exc.strerror}.")
        return
    turns = sum(message["role"] == "user" for message in record["messages"])
    state.say(f"Saved {turns} turn{'s' * (turns != 1)} to {path}")


def transcript_record(state: ReplState) -> dict[str, Any]:
    """The conversation's export record: the store's, when this chat is saved there (so the file equals
    `history export`), else built from memory (--no-save, save = false, or the saved copy is gone)."""
    from llmchat.store.export import conversation_record
    from llmchat.store.records import now

    conversation = state.conversation
    if state.recorder() is not None and conversation.id is not None and state.store is not None:
        try:
            return state.store.export_record(conversation.id)
        except LlmchatError:
            pass  # removed by `history rm` meanwhile, or the store is unusable: what is on screen still counts
    if state.unsaved is None or state.unsaved[0] is not conversation:
        state.unsaved = (conversation, conversation.id or secrets.token_hex(4), now())
    _, cid, created = state.unsaved
    return conversation_record(conversation, state.profile, cid=cid, created=created, model=state.options.model)
