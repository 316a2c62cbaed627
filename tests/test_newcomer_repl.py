"""What a newcomer meets in the chat (issue 17), driven in a pseudo-terminal against the fake server."""

from __future__ import annotations

import pytest
from fakeserver import Stream

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(40)

CTRL_C, CTRL_D = "\x03", "\x04"


@pytest.mark.parametrize("profile", ["local", "bailian"])
def test_a_question_stopped_during_reasoning_stays_in_the_context(repl, fake_server, profile) -> None:
    """Ctrl-C while only reasoning has arrived: the next question is sent after the stopped one, followed
    by an assistant message saying it was interrupted, which both protocols accept."""
    chat = repl("-p", profile)
    fake_server.enqueue(Stream(reasoning="step one, step two, step three, step four, step five", answer="done",
                               piece_size=4, delay=0.4))
    chat.enter("explain monads")
    chat.wait_text("step")
    chat.send(CTRL_C)
    chat.wait_prompt()
    assert "[interrupted]" in chat.since()
    request = chat.ask("shorter, please")
    roles = [(m["role"], m["content"]) for m in request.body["messages"] if m["role"] != "system"]
    assert roles == [("user", "explain monads"), ("assistant", "[interrupted by the user before answering]"),
                     ("user", "shorter, please")]
    assert "You said: shorter, please" in chat.since()  # the server took it: no role-order error


def test_resume_alone_lists_recent_conversations_to_pick_from(repl, llmchat) -> None:
    import json

    chat = repl()
    assert "No saved conversations yet." in chat.command("/resume")
    chat.ask("first topic")
    chat.command("/new")
    chat.ask("second topic")
    listed = json.loads(llmchat("history", "--json").stdout)
    shown = chat.command("/resume")
    assert "Give a conversation id" not in shown and "llmchat history" not in shown
    for row in listed:
        line = next(line for line in shown.splitlines() if row["id"] in line)
        assert row["title"] in line and "1 turn" in line and ("just now" in line or "min ago" in line)
    assert "(this chat)" in next(line for line in shown.splitlines() if listed[0]["id"] in line)
    assert "/resume ID" in shown
    chat.wait_prompt()
    chat.mark = len(chat.raw)  # what is drawn from here on: the completion menu only
    chat.send("/resume ")
    chat.send("\t")  # Tab: the ids, with their titles, in the completion menu
    chat.wait_for(lambda: listed[1]["id"] in chat.since() and "first topic" in chat.since(), "the menu")
