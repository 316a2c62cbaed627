"""`/file PATH`: a text file's contents added to the next question, as `cat FILE | llmchat ask` adds stdin.

Asked for across the peers (llm #682 and #951, two unmerged `!attach` PRs; only aichat's `.file` does it):
bring a file into a chat without leaving it. The file is read when it is attached, so a wrong path, a
directory, a binary or non-UTF-8 file fails at once with the reason, before anything is sent; it is read
the way the `read_file` tool reads (`tools/builtins.read_file`: never blocking on a FIFO, a binary file
refused, text beyond the limit cut with a marker). The next question carries each file after the question
as `<file name="PATH">…</file>`, so the model can tell the files apart and name them; the question is
saved and re-sent with them, like piped text.
"""

from __future__ import annotations

from llmchat.core.files import FILE_LIMIT, AttachedFile
from llmchat.core.tokens import estimate_tokens
from llmchat.repl.conversation import counted, listed_or_cleared
from llmchat.repl.state import ReplState, UsageError


def read_attachment(spec: str) -> AttachedFile:
    """The file named by `spec`, or a UsageError saying why it cannot be attached."""
    from llmchat.tools.builtins import read_file, resolve_path

    status, text = read_file(resolve_path(spec), FILE_LIMIT)
    if status != "ok":
        raise UsageError(f"{text[:1].upper()}{text[1:]}: nothing was attached.")  # it names the path
    cut = len(text) > FILE_LIMIT  # read_file's marker says how much was cut
    return AttachedFile(name=spec, text=text, cut=cut)


def cmd_file(state: ReplState, args: str) -> None:
    pending = state.pending_files
    rows = [f"{file.name} ({_describe(file)})" for file in pending.files]
    if listed_or_cleared(state, args, "file", rows, pending.take, "/file PATH adds a text file to the next question."):
        return
    attached = read_attachment(args)
    pending.files.append(attached)
    cut = f"; cut at {FILE_LIMIT:,} characters" if attached.cut else ""
    state.say(f"Attached {attached.name} ({_describe(attached)}{cut}) to the next question "
              f"({counted(len(pending.files), 'file')} in all).")


def _describe(file: AttachedFile) -> str:
    lines = file.text.count("\n") + (not file.text.endswith("\n") and bool(file.text))
    return f"{lines:,} line{'s' if lines != 1 else ''}, about {estimate_tokens(file.text):,} tokens"
