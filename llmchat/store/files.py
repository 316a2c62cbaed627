"""Where the history lives, and the file rules: a private directory and file, never through a symlink."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from llmchat.store.records import (
    SymlinkRefused,
)
from llmchat.store.schema import (
    DB_FILENAME,
)

# ------------------------------------------------------------------------------------------- location


def data_dir() -> Path:
    """Where llmchat keeps its data; XDG_DATA_HOME moves it on Linux (the tests rely on that)."""
    from platformdirs import user_data_path

    return user_data_path("llmchat", appauthor=False)


def default_path() -> Path:
    return data_dir() / DB_FILENAME


def refuse_symlink(path: Path) -> None:
    """A link could point the owner-only history (and our chmod) at any file: never follow one."""
    raise SymlinkRefused(f"The history database {path} is a symbolic link; llmchat does not follow it.",
                         hint="Move the real file to that path (or remove the link), or use --no-save.")


def create_private(path: Path) -> None:
    """Create the directory (0700) and an empty file (0600) before SQLite does it with the umask's mode."""
    if path.is_symlink():
        refuse_symlink(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    try:  # O_EXCL also fails on a link, dangling or not: nothing is created through one
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if path.is_symlink():  # made between the check above and here
            refuse_symlink(path)
        _tighten(path)
        return
    os.close(fd)
    os.chmod(path, 0o600)  # the umask may have removed bits, never added: this only makes it exact


def _tighten(path: Path) -> None:
    """A file made by something else (an older copy, a restore) with group/other bits loses them."""
    with contextlib.suppress(OSError, NotImplementedError):
        mode = path.lstat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700, follow_symlinks=False)
