"""`/image` in the REPL (issue 8): attached to the next question, resent with it, saved once by hash.

The REPL tests drive a real `llmchat` in a pty against the fake server (fixtures in `conftest_repl.py`)
and check the Ollama request body; the store tests count rows in the `images` table.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from llmchat.config.profile import Profile
from llmchat.core.conversation import Conversation
from llmchat.core.events import Answer, Finish, TurnResult
from llmchat.core.images import load
from llmchat.engine.chat import run_turn
from llmchat.providers import ChatOptions
from llmchat.store.db import Store, open_store
from llmchat.store.files import default_path

pytest_plugins = ("conftest_repl",)
pytestmark = pytest.mark.timeout(60)

#: A valid 1x1 PNG (67 bytes).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000a49444154789c63000100000500010d0a2db40000000049454e44ae426082")
PNG_B64 = base64.b64encode(PNG).decode()
PERSONA = {"role": "system", "content": "You are terse."}
PROFILE = Profile(name="local", provider="ollama", model="qwen3:0.6b")


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    return path


def count(path: Path, sql: str) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


# ------------------------------------------------------------------------------------------------ REPL


def test_image_goes_with_the_next_question_and_stays_in_the_history(repl, fake_server, png, tmp_path) -> None:
    fake_server.vision_models.add("qwen3:0.6b")
    chat = repl()
    out = chat.command(f"/image {png}")
    assert f"Attached {png}" in out and "1 image in all" in out
    assert str(png) in chat.command("/image")  # alone: lists what is attached
    chat.toolbar("1 image attached")

    first = chat.ask("what is this?")
    assert first.body["messages"] == [PERSONA, {"role": "user", "content": "what is this?", "images": [PNG_B64]}]
    second = chat.ask("and now?")  # nothing new attached: the first question keeps its image in the history
    assert second.body["messages"] == [
        PERSONA, {"role": "user", "content": "what is this?", "images": [PNG_B64]},
        {"role": "assistant", "content": "You said: what is this?"}, {"role": "user", "content": "and now?"},
    ]

    missing = chat.command(f"/image {tmp_path / 'nope.png'}")
    # one message, then the prompt (wrapped at spaces to the terminal's width: issue 17)
    flat = " ".join(missing.split())
    assert "nope.png does not exist. Usage: /image [PATH|URL|clear]" in flat
    assert flat.count("does not exist") == 1 and "Traceback" not in missing and not chat.eof
    chat.command(f"/image {png}")
    assert "Dropped 1 image" in chat.command("/image clear")
    third = chat.ask("still there?")  # the chat went on; the cleared image was not sent with the question
    assert third.body["messages"][-1] == {"role": "user", "content": "still there?"}
    chat.enter("/exit")
    assert chat.wait_exit() == 0

    with open_store() as store:  # saved once, and resumed with the question it belongs to
        conversation = store.load_conversation("last")
    assert [e.images[0].data if e.images else None for e in conversation.exchanges] == [PNG, None, None]
    assert count(default_path(), "SELECT count(*) FROM images") == 1


def test_model_that_cannot_see_keeps_the_image_and_sends_nothing(repl, fake_server, png) -> None:
    chat = repl()
    chat.command(f"/image {png}")
    chat.enter("what is this?")
    chat.wait_prompt()
    assert "cannot see images" in chat.since() and "Nothing was sent" in chat.since()
    assert not chat.chat_requests()
    assert str(png) in chat.command("/image")


# ----------------------------------------------------------------------------------------------- store


class Script:
    def __init__(self) -> None:
        self.sent: list[list[dict]] = []

    def stream(self, messages, options):
        self.sent.append([dict(m) for m in messages])
        yield Answer("ok")
        yield Finish("stop")


class NullView:
    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def close(self, result: TurnResult) -> None: ...


def test_same_image_is_stored_once_and_survives_a_resume(tmp_path, png) -> None:
    path = tmp_path / "data" / "history.db"
    image = load(str(png))
    url = load("https://example.com/cat.png")
    with Store(path) as store:
        conversation = Conversation(system="Be brief.")
        for question, images in (("one", (image,)), ("two", ()), ("three", (image, url))):
            run_turn(conversation, question, Script(), ChatOptions(model="qwen3:0.6b", images=images), NullView(),
                     retries=0, recorder=store.recorder(PROFILE))
        other = Conversation()
        run_turn(other, "again", Script(), ChatOptions(model="qwen3:0.6b", images=(image,)), NullView(),
                 retries=0, recorder=store.recorder(PROFILE))
        assert count(path, "SELECT count(*) FROM images") == 2  # the PNG once, the URL once
        assert count(path, "SELECT count(*) FROM message_images") == 4
        resumed = store.load_conversation(conversation.id or "")
        exported = store.export_json(conversation.id or "")
    assert [tuple(i.sha256 for i in e.images) for e in resumed.exchanges] == [
        (image.sha256,), (), (image.sha256, url.sha256)]
    assert resumed.exchanges[0].images[0].data == PNG and resumed.exchanges[2].images[1].url == url.url
    assert resumed.messages()[1]["images"] == resumed.exchanges[0].images  # resent on the next turn
    with Store(tmp_path / "copy.db") as copy:  # export → import → export is unchanged
        imported = copy.import_record(json.loads(exported))
        assert copy.export_json(imported.id) == exported


def test_undo_and_retry_keep_the_saved_images_consistent(tmp_path, png) -> None:
    path = tmp_path / "history.db"
    image = load(str(png))
    with Store(path) as store:
        conversation = Conversation(exchanges=[])
        run_turn(conversation, "look", Script(), ChatOptions(model="m", images=(image,)), NullView(),
                 retries=0, recorder=store.recorder(PROFILE))
        conversation.pop()
        store.truncate(conversation)
        assert count(path, "SELECT count(*) FROM message_images") == 0
        assert count(path, "SELECT count(*) FROM images") == 1  # the bytes stay: another turn may use them


def test_ask_image_is_saved(repl_config, fake_server, llmchat, png) -> None:
    fake_server.vision_models.add("qwen3:0.6b")
    for question in ("What is this?", "And this?"):
        run = llmchat("ask", "--image", str(png), question)
        assert run.code == 0, run.stderr
    assert count(default_path(), "SELECT count(*) FROM images") == 1
    assert count(default_path(), "SELECT count(*) FROM message_images") == 2
    with open_store() as store:
        conversation = store.load_conversation("last")
    assert conversation.exchanges[0].images[0].data == PNG
