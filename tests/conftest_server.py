"""pytest fixture for the fake Ollama/DashScope server (``tests/fakeserver.py``).

``tests/`` is not a package, so this module puts its own directory on ``sys.path`` before importing
``fakeserver``; that keeps ``from conftest_server import *`` working from ``conftest.py`` whatever pytest's
import mode, and lets tests ``from fakeserver import Stream, Raw, Stall, Drop``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from fakeserver import FakeServer  # noqa: E402 (needs the sys.path entry above)

__all__ = ["fake_server"]


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A fresh, started FakeServer per test (its own port, queue and request log); stopped afterwards."""
    with FakeServer() as server:
        yield server
