"""Text files attached to a question (`/file` in the chat): data only, as `images.PendingImages` is.

The REPL reads them (repl/files.py); the question carries each after its own text as
`<file name="PATH">…</file>` (`with_files`), so a model can tell several apart and name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The most characters one file may bring (about 50,000 tokens): beyond it the text is cut, with a marker.
FILE_LIMIT = 200_000


@dataclass(frozen=True)
class AttachedFile:
    name: str  # as the user typed it: what the model and the user see
    text: str
    cut: bool  # longer than FILE_LIMIT: the text ends with the cut marker


@dataclass
class PendingFiles:
    """The files `/file` attached, waiting for the next question."""

    files: list[AttachedFile] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files)

    def take(self) -> list[AttachedFile]:
        taken, self.files = self.files, []
        return taken

    def restore(self, files: list[AttachedFile]) -> None:
        """Put back files taken for a question that was not sent after all."""
        self.files[:0] = files


def with_files(question: str, files: list[AttachedFile]) -> str:
    """The question with each file after it, in the order they were attached."""
    if not files:
        return question
    parts = [question] if question else []
    parts += [f'<file name="{file.name}">\n{file.text.rstrip(chr(10))}\n</file>' for file in files]
    return "\n\n".join(parts)


