"""Images attached to a question: loading, checking, and their two wire forms.

Why it is shaped this way:
- An image is read and checked once, when it is attached (`load`), so a wrong path or a PDF fails
  before anything is sent, with exit 2 like any other bad input (DESIGN §5).
- The format comes from the file's first bytes, not its name: a `.png` that is really a HEIC photo
  would otherwise reach the server and fail there with a vague 400.
- A URL is never downloaded: llmchat talks to the configured servers only. OpenAI-compatible servers
  (Bailian's Qwen-VL included) fetch URLs themselves; Ollama takes image bytes only, so a URL is refused
  for an Ollama profile with a message that says to download it first.
- `sha256` identifies an image for the history store, which keeps each image once however many turns
  or conversations attach it. For a URL it is the hash of the URL text (the bytes are never seen).

Standard library only: imported by the providers and by the CLI before any client library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmchat.core.errors import ConfigError

#: OpenAI's per-image limit; Ollama has none, but a 20 MB base64 body is already a slow request.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP", "image/gif": "GIF"}
SUPPORTED = ", ".join(FORMATS.values())


class ImageError(ConfigError):
    """An image that cannot be sent: unreadable, not a supported format, too big, or a model that cannot see."""


@dataclass(frozen=True)
class Image:
    """One image, checked: either its bytes (a file, a data URL) or a URL the server fetches itself."""

    source: str  # what the user gave (path or URL), for messages; never sent
    sha256: str  # of the bytes; of the URL text for a URL
    mime: str | None  # "image/png" …; None for a URL (not fetched, so not known)
    data: bytes | None = field(default=None, repr=False)
    url: str | None = None

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "image") -> Image:
        """An image from bytes already in hand (e.g. the store's copy); checks size and format."""
        if not data:
            raise ImageError(f"{source} is empty.", hint="Attach a PNG, JPEG, WebP or GIF image.")
        if len(data) > MAX_IMAGE_BYTES:
            raise _too_big(source, len(data))
        mime = sniff(data)
        if mime is None:
            raise ImageError(f"{source} is not a supported image ({_describe(data)}).",
                             hint=f"Supported formats: {SUPPORTED}. Convert it first, e.g. to PNG or JPEG.")
        return cls(source=source, sha256=hashlib.sha256(data).hexdigest(), mime=mime, data=data)

    @classmethod
    def from_url(cls, url: str) -> Image:
        return cls(source=url, sha256=hashlib.sha256(url.encode("utf-8")).hexdigest(), mime=None, url=url)

    @property
    def is_url(self) -> bool:
        return self.data is None

    def base64(self) -> str:
        """The bytes as base64: Ollama's `images` entries. A URL has no bytes here, so it cannot be sent."""
        if self.data is None:
            raise ImageError(
                f"Ollama cannot fetch images from URLs ({self.source}); it only accepts image data.",
                hint="Download the image and attach the file instead: --image ./picture.png",
            )
        return base64.b64encode(self.data).decode("ascii")

    def openai_url(self) -> str:
        """What an OpenAI-compatible `image_url` part carries: the URL itself, or a data URL of the bytes."""
        if self.url is not None:
            return self.url
        return f"data:{self.mime};base64,{self.base64()}"


def load(spec: str) -> Image:
    """The image named by `spec`: a file path (`~` expanded), an http(s) URL, or a `data:image/…` URL.

    Raises ImageError (exit 2) with what is wrong and what to do.
    """
    spec = spec.strip()
    if not spec:
        raise ImageError("An empty image name was given.", hint="Give a file path or an http(s) URL.")
    lowered = spec.lower()
    if lowered.startswith(("http://", "https://")):
        if not spec.split("://", 1)[1].split("/", 1)[0]:
            raise ImageError(f"{spec} is not a valid URL.", hint="Give e.g. https://example.com/cat.png")
        return Image.from_url(spec)
    if lowered.startswith("data:"):
        return _from_data_url(spec)
    data = _read_file(Path(spec).expanduser(), spec)
    return Image.from_bytes(data, source=spec)


def _read_file(path: Path, spec: str) -> bytes:
    """The file's bytes, read only after `stat` says it is a regular file within the size limit.

    Why not just `read_bytes()`: `/dev/zero` never ends (the process was killed for memory), a FIFO
    blocks until someone writes, and a 1 GB file is read whole only to be refused. So the path is
    stat-ed first, opened without blocking, checked again on the open descriptor (it may have been
    swapped meanwhile), and at most limit + 1 bytes are read whatever it claims to be.
    """
    try:
        _check_stat(os.stat(path), spec)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as file:
            _check_stat(os.fstat(file.fileno()), spec)
            data = file.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        raise ImageError(f"Image {spec} does not exist.", hint="Check the path (relative paths start "
                         "in the current directory).") from None
    except IsADirectoryError:
        raise ImageError(f"Image {spec} is a directory, not a file.", hint="Name one image file.") from None
    except PermissionError:
        raise ImageError(f"Cannot read image {spec}: permission denied.",
                         hint="Check the file's permissions.") from None
    except OSError as exc:
        raise ImageError(f"Cannot read image {spec}: {exc.strerror or exc}.") from None
    if len(data) > MAX_IMAGE_BYTES:  # it grew after the stat: refuse it as too big all the same
        raise _too_big(spec, len(data), at_least=True)
    return data


def _check_stat(info: os.stat_result, spec: str) -> None:
    """Only a regular file within the size limit may be read (not a device, FIFO, socket or directory)."""
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ImageError(f"Image {spec} is {kind}, not an image file.",
                         hint="Save the image to a file first and attach that file.")
    if info.st_size > MAX_IMAGE_BYTES:
        raise _too_big(spec, info.st_size)


def _too_big(source: str, size: int, *, at_least: bool = False) -> ImageError:
    more = "more than " if at_least else ""
    return ImageError(
        f"{source} is {more}{size / 1e6:.1f} MB; images are limited to {MAX_IMAGE_BYTES // 2**20} MB.",
        hint="Scale it down or compress it first (e.g. save it as JPEG).",
    )


def _from_data_url(spec: str) -> Image:
    head, _, payload = spec.partition(",")
    if not head.lower().endswith(";base64") or not payload:
        raise ImageError("Only base64 data URLs are supported (data:image/png;base64,…).")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("The data URL's base64 payload is not valid base64.") from None
    return Image.from_bytes(data, source="the data URL")


def sniff(data: bytes) -> str | None:
    """The image's MIME type from its magic bytes, or None when it is not one of the supported formats."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def _describe(data: bytes) -> str:
    """A guess at what the file is, so the error can say "a PDF" rather than just "unsupported"."""
    if data.startswith(b"%PDF"):
        return "it is a PDF"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        return "it is a HEIC/HEIF photo" if brand.startswith(("hei", "mif", "hev")) else f"it is a {brand} file"
    if data.startswith(b"BM"):
        return "it is a BMP image"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "it is a TIFF image"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")):
        return "it is SVG/XML text"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary data"
    return "it is text"


# ------------------------------------------------------------------------------------------ wire forms


def attach(messages: Sequence[Mapping[str, Any]], images: Sequence[Image]) -> list[dict[str, Any]]:
    """The messages with `images` added to the last user message (the question being asked).

    Any message may already carry an `images` tuple of Image (history from the store); these come after.
    """
    out = [dict(m) for m in messages]
    if not images:
        return out
    for message in reversed(out):
        if message.get("role") == "user":
            message["images"] = (*message.get("images", ()), *images)
            return out
    raise ImageError("There is no question to attach the images to.")


def for_ollama(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's form: each message's `images` as a list of base64 strings (the key left out when empty)."""
    out = []
    for message in messages:
        message = dict(message)
        images = message.pop("images", ())
        if images:
            message["images"] = [image.base64() for image in images]
        out.append(message)
    return out


def for_openai(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The OpenAI form: a message with images gets a list of content parts, text first, then one
    `image_url` part per image (a data URL for bytes, the URL itself otherwise)."""
    out = []
    for message in messages:
        message = dict(message)
        images = message.pop("images", ())
        if images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": message.get("content") or ""}]
            parts += [{"type": "image_url", "image_url": {"url": image.openai_url()}} for image in images]
            message["content"] = parts
        out.append(message)
    return out


# ------------------------------------------------------------------------------------------ the REPL


class PendingImages:
    """Images attached with `/image` that wait for the next question; taken once, then cleared."""

    def __init__(self) -> None:
        self._images: list[Image] = []

    def add(self, spec: str) -> Image:
        """Load and keep one image (ImageError for a bad one: the REPL shows it and goes on)."""
        image = load(spec)
        if all(kept.sha256 != image.sha256 for kept in self._images):
            self._images.append(image)
        return image

    def take(self) -> tuple[Image, ...]:
        """The images for the question being sent now; the next question starts with none."""
        images, self._images = tuple(self._images), []
        return images

    def clear(self) -> None:
        self._images = []

    def restore(self, images: Sequence[Image]) -> None:
        """Put images back (a /retry asks its question again with the images it had)."""
        for image in images:
            if all(kept.sha256 != image.sha256 for kept in self._images):
                self._images.append(image)

    def images(self) -> tuple[Image, ...]:
        """What is attached now, without taking it."""
        return tuple(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def __bool__(self) -> bool:
        return bool(self._images)
