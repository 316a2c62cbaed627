"""Server-sent events, read from a stream's lines: the `data` of each event, nothing else.

The OpenAI-compatible provider reads the SDK's open response line by line and decodes each event's
JSON itself, because the SDK's own iteration builds a pydantic chunk object per event (4.5× the cost
of `json.loads` on a long answer). This decoder follows the SDK's (openai._streaming.SSEDecoder, after
the WHATWG event-stream rules) field for field, so a stream means the same thing either way: `data`
lines of one event are joined with newlines, comments are skipped, an `id` once seen makes every
later blank line an event (the spec keeps it), and an event still open when the stream ends is dropped.
"""

from __future__ import annotations


class SSELines:
    """Feed the lines of an event stream (without their line ends); get each event's data back."""

    __slots__ = ("_data", "_event", "_id", "_retry", "done")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id = False
        self._retry = False
        #: `data: [DONE]` was seen: the stream is over, whatever follows it.
        self.done = False

    def feed(self, line: str) -> str | None:
        """The data of the event this line completes, or None (the line was part of one, or nothing)."""
        if line.startswith("data:"):  # the common case first: one data line per event
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
            return None
        if not line:
            if not self._data and not self._event and not self._id and not self._retry:
                return None
            data = "\n".join(self._data)
            self._data, self._event, self._retry = [], None, False
            if data.startswith("[DONE]"):
                self.done = True
                return None
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = bool(value)  # the last id, kept across events; an empty one clears it
        elif name == "retry":
            try:
                int(value)
            except ValueError:
                return None
            self._retry = True
        return None


class LineSplitter:
    """Bytes in, lines out (without their ends), as the SDK splits them: at CR, LF or CRLF, a CRLF
    split across two reads counted once; each line decoded as strict UTF-8 (a bad byte is ValueError:
    a malformed stream). Splitting bytes skips httpx's text and line decoders, a tenth of the cost of
    a long answer."""

    __slots__ = ("_cr", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._cr = False  # the last read ended with CR: an LF opening the next one ends no line

    def feed(self, data: bytes) -> list[str]:
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = False
        if self._pending:
            data = self._pending + data
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._pending = data.split(b"\n")
        return [line.decode("utf-8") for line in lines]

    def end(self) -> list[str]:
        """The last line, when the stream did not end with a line end."""
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8")] if rest else []
