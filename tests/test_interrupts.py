"""`core.interrupts.held`: a Ctrl-C (or SIGTERM/SIGHUP) inside the section surfaces right after it, whole.

Each test raises the signal at a known point of the body, so nothing depends on timing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from llmchat.core import interrupts, stops


@pytest.fixture(autouse=True)
def handlers() -> Iterator[None]:
    """Python's own Ctrl-C handler and llmchat's SIGTERM/SIGHUP ones, put back as they were afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in interrupts.HELD}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stops.install()
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_ctrl_c_inside_is_raised_once_the_body_is_done() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt) as caught, interrupts.held():
        signal.raise_signal(signal.SIGINT)
        done.append("the rest of the body")
    assert done == ["the rest of the body"] and type(caught.value) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nothing_held_nothing_raised() -> None:
    with interrupts.held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_wins_over_a_ctrl_c_in_the_same_section() -> None:
    with pytest.raises(stops.Terminated) as caught, interrupts.held():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # stops' own handler ran: a second one is ignored


def test_a_signal_sent_from_another_thread_is_held_too() -> None:
    """With other threads alive the kernel may deliver to any of them; Python still handles it in the main
    thread, where the swapped handler holds it (blocking the signal in the main thread would not)."""
    done = []
    sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        sender.start()
        sender.join()
        done.append("joined")
    assert done == ["joined"]


def test_nested_sections_hand_the_signal_outwards() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        with interrupts.held():
            signal.raise_signal(signal.SIGINT)
        done.append("after the inner section")
    assert done == ["after the inner section"]


def test_an_ignored_signal_stays_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts.held():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_outside_the_main_thread_it_changes_nothing() -> None:
    seen: list[object] = []

    def body() -> None:
        with interrupts.held():
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [signal.default_int_handler]


def test_a_signal_landing_while_the_handlers_go_back_leaves_none_of_them_swapped(monkeypatch) -> None:
    """A SIGTERM that arrives just after its own handler is back (and before Ctrl-C's is) runs that handler
    at once, which raises: Ctrl-C's handler must still be put back, not stay the section's `hold` for good
    (every later Ctrl-C would then vanish into a list nobody reads). The signal is raised at that exact
    point by the restore itself, so nothing depends on timing."""
    terminate = signal.getsignal(signal.SIGTERM)
    restore = signal.signal

    def restoring(signum: int, handler: object) -> object:
        previous = restore(signum, handler)
        if signum == signal.SIGTERM and handler is terminate:
            signal.raise_signal(signal.SIGTERM)  # handled by `terminate` as soon as this returns
        return previous

    monkeypatch.setattr(signal, "signal", restoring)
    with pytest.raises(stops.Terminated), interrupts.held():
        pass
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_landing_while_the_handlers_go_back_does_not_drop_a_held_sigterm(monkeypatch) -> None:
    """A SIGTERM held in the section still ends the process when a Ctrl-C arrives just as Ctrl-C's handler
    is back (it raises KeyboardInterrupt there, before the held signals are handled)."""
    restore = signal.signal

    def restoring(signum: int, handler: object) -> object:
        previous = restore(signum, handler)
        if signum == signal.SIGINT and handler is signal.default_int_handler:
            signal.raise_signal(signal.SIGINT)
        return previous

    with pytest.raises(stops.Terminated), interrupts.held():
        signal.raise_signal(signal.SIGTERM)
        monkeypatch.setattr(signal, "signal", restoring)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_what_a_handler_set_while_the_handlers_go_back_is_not_undone(monkeypatch) -> None:
    """A SIGHUP handled just after its handler is back makes stops ignore any further SIGTERM/SIGHUP (the save
    it starts must not be cut by a second one): putting the section's saved SIGTERM handler back over that
    would undo it. Only the handlers still holding are put back."""
    hangup = signal.getsignal(signal.SIGHUP)
    restore = signal.signal

    def restoring(signum: int, handler: object) -> object:
        previous = restore(signum, handler)
        if signum == signal.SIGHUP and handler is hangup:
            signal.raise_signal(signal.SIGHUP)
        return previous

    monkeypatch.setattr(signal, "signal", restoring)
    with pytest.raises(stops.Terminated), interrupts.held():
        pass
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SIGTERM_IN_A_FINALIZER = """
import gc, os, signal, sys, time
from llmchat.core import stops

stops.install()

class Slow:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # lands while the finalizer runs, as a SIGHUP did in CI
        time.sleep(0.2)  # (the handler runs at the next bytecode: still inside __del__)

try:
    obj = Slow()
    obj.me = obj  # a cycle: only the collector frees it, running __del__ wherever it starts
    del obj
    gc.collect()
    time.sleep(5)
    print("went on")
except stops.Terminated as exc:
    print("terminated", exc.name)
"""


def test_sigterm_landing_in_a_finalizer_still_ends_the_process() -> None:
    """An exception raised in `__del__` is printed and dropped by Python: raised there, `Terminated` was
    lost and the chat went on after its terminal closed (seen in CI: SIGHUP during an asyncio loop's
    `__del__`). The signal is delivered again once the finalizer is over."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SIGTERM_IN_A_FINALIZER], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "terminated SIGTERM", done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr
