"""The slash-command registry without a terminal: dispatch, completion, argument errors, /set validation."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from llmchat.config.load import Config
from llmchat.config.profile import Profile
from llmchat.core.conversation import Exchange
from llmchat.core.errors import LlmchatError, MissingApiKey, Unreachable
from llmchat.core.events import Answer, Event, TurnResult, Usage
from llmchat.core.images import Image
from llmchat.core.pricing import Price
from llmchat.engine.history import markdown_transcript
from llmchat.engine.usage import Tally
from llmchat.providers import ChatOptions, Message, ModelInfo
from llmchat.repl.commands import COMMANDS
from llmchat.repl.registry import Command, Registry, is_command
from llmchat.repl.state import Action, ReplState
from llmchat.store.db import Store
from llmchat.store.export import record_parts

LOCAL = Profile(name="local", provider="ollama", model="qwen3:0.6b", base_url="http://127.0.0.1:9",
                system="Be terse.", temperature=0.7)
CLOUD = Profile(name="cloud", provider="bailian", model="qwen-plus", base_url="http://127.0.0.1:9/v1",
                price=Price(input=0.001, output=0.002, currency="CNY"))
BROKEN = Profile(name="broken", provider="bailian", model="qwen-plus", base_url="http://127.0.0.1:9/v1")


class FakeProvider:
    def __init__(self, profile: Profile, fail: bool = False) -> None:
        self.profile = profile
        self.fail = fail
        self.listed = 0

    def stream(self, messages: Sequence[Message], options: ChatOptions) -> Iterator[Event]:
        yield Answer("ok")

    def context_length(self, model: str) -> int | None:
        return None  # the window comes from the profile or the table, as with a cloud server

    def list_models(self) -> list[ModelInfo]:
        self.listed += 1
        if self.fail:
            raise Unreachable("down")
        return [ModelInfo("qwen3:8b"), ModelInfo("qwen3:0.6b"), ModelInfo("llama3.2:latest")]


def connector(profile: Profile) -> FakeProvider:
    if profile.name == "broken":
        raise MissingApiKey("Profile 'broken' needs an API key in BROKEN_KEY, which is not set.")
    return FakeProvider(profile)


class Harness:
    """A state plus what it printed and reported."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.errors: list[LlmchatError] = []
        config = Config(profiles={"local": LOCAL, "cloud": CLOUD, "broken": BROKEN}, default="local", path=None)
        self.state = ReplState.start(config, LOCAL, connector=connector, out=self.out, report=self.errors.append)

    def run(self, line: str) -> tuple[Action, str]:
        """Dispatch `line`; returns the action and only what this command printed."""
        self.out.seek(0)
        self.out.truncate()
        action = COMMANDS.dispatch(self.state, line)
        return action, self.out.getvalue()

    def say(self, line: str) -> str:
        return self.run(line)[1]

    def turn(self, question: str, answer: str = "", *, usage: Usage | None = None,
             interrupted: bool = False) -> None:
        answer = answer or f"You said: {question}"
        self.state.conversation.exchanges.append(
            Exchange(user=question, answer=answer, model=self.state.options.model, interrupted=interrupted,
                     usage=usage))
        self.state.record(TurnResult(model=self.state.options.model, answer=answer, usage=usage))


@pytest.fixture
def h() -> Harness:
    return Harness()


def completions(h: Harness, text: str) -> list[str]:
    return [s.text for s in COMMANDS.complete(h.state, text)]


# ------------------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("line", ["/exit", "/quit", "/bye", "/EXIT", "  /exit  "])
def test_exit_and_its_aliases(h: Harness, line: str) -> None:
    assert h.run(line)[0] == Action(exit=True)


def test_unknown_command_suggests_the_nearest_and_never_exits(h: Harness) -> None:
    action, out = h.run("/hepl")
    assert action == Action()
    assert out.strip() == "Unknown command '/hepl'. Did you mean /help? Type /help for the list; nothing was sent."
    assert "Did you mean /profile?" in h.say("/profil x")
    assert "Did you mean" not in h.say("/zzzzzz")
    assert "Unknown command '/'" in h.say("/")


@pytest.mark.parametrize(("text", "command"), [
    ("/help", True), ("/system be\nbrief", True), ("/", True), ("/usr/bin/env is slow", False),
    ("//help", False), ("hello /help", False), (" /help", False),
])
def test_is_command(text: str, command: bool) -> None:
    assert is_command(text) is command


def test_registry_rejects_duplicate_names() -> None:
    def noop(state: ReplState, args: str) -> None:
        return None

    with pytest.raises(ValueError, match="duplicate command name /a"):
        Registry([Command("a", noop, "x"), Command("b", noop, "y", aliases=("a",))])


def test_commands_without_arguments_refuse_them(h: Harness) -> None:
    assert h.say("/undo now").strip() == "This command takes no arguments. Usage: /undo"


def test_help_lists_every_command_from_the_registry(h: Harness) -> None:
    out = h.say("/help")
    for command in COMMANDS.commands:
        assert command.usage in out and command.help in out
    assert "(also /quit, /bye)" in out and "Ctrl-X Ctrl-E" in out
    assert h.say("/help set").startswith("/set [KEY VALUE|default]\n  Set a sampling option")
    assert h.say("/? /exit").startswith("/exit  (also /quit, /bye)")
    assert h.say("/help zzz").strip() == "No command '/zzz'. Usage: /help [COMMAND]"


# ----------------------------------------------------------------------------------------- completion


def test_completes_command_names_and_aliases(h: Harness) -> None:
    assert completions(h, "/") == ["/" + c.name for c in COMMANDS.commands]
    assert completions(h, "/pr") == ["/profile"]
    assert completions(h, "/q") == ["/quit"]
    suggestion = COMMANDS.complete(h.state, "/pr")[0]
    assert suggestion.start == -3 and "Switch provider" in suggestion.meta
    assert completions(h, "hello") == [] and completions(h, "/nope ") == []
    assert completions(h, "/system ") == []


def test_completes_profiles_with_their_model(h: Harness) -> None:
    assert completions(h, "/profile ") == ["local", "cloud", "broken"]
    found = COMMANDS.complete(h.state, "/profile cl")
    assert [(s.text, s.start, s.meta) for s in found] == [("cloud", -2, "bailian · qwen-plus")]
    assert completions(h, "/profile cloud ") == []


def test_completes_models_fetched_once(h: Harness) -> None:
    assert completions(h, "/model qwen3:") == ["qwen3:0.6b", "qwen3:8b"]
    assert completions(h, "/model ") == ["llama3.2:latest", "qwen3:0.6b", "qwen3:8b"]
    assert h.state.provider.listed == 1


def test_model_listing_failure_means_no_suggestions(h: Harness) -> None:
    h.state.provider = FakeProvider(LOCAL, fail=True)
    assert completions(h, "/model ") == []
    assert h.errors == []


def test_completes_think_and_set_arguments(h: Harness) -> None:
    assert completions(h, "/think o") == ["on", "off"]
    assert completions(h, "/set t") == ["temperature", "top_p", "top_k"]
    assert completions(h, "/set temperature ") == ["default"]
    assert completions(h, "/help sa") == ["save"]


# --------------------------------------------------------------------------------------------- /set


@pytest.mark.parametrize(("line", "field", "value"), [
    ("/set temperature 0.2", "temperature", 0.2),
    ("/set temperature 2", "temperature", 2.0),
    ("/set top_p 1", "top_p", 1.0),
    ("/set top-p 0.5", "top_p", 0.5),
    ("/set top_k 40", "top_k", 40),
    ("/set max_tokens 256", "max_tokens", 256),
    ("/set seed -3", "seed", -3),
    ("/set context_window 8192", "context_window", 8192),
    ("/set stop END '###' \"two words\"", "stop", ("END", "###", "two words")),
    ("/set search on", "search", True),
    ("/set TEMPERATURE 1", "temperature", 1.0),
])
def test_set_accepts_typed_values(h: Harness, line: str, field: str, value: object) -> None:
    out = h.say(line)
    assert getattr(h.state.options, field) == value
    assert out.startswith(f"{field} = ")


@pytest.mark.parametrize(("line", "message"), [
    ("/set temperature hot", "temperature: expected a number from 0 to 2, got 'hot'."),
    ("/set temperature 2.5", "temperature: expected a number from 0 to 2, got '2.5'."),
    ("/set temperature nan", "temperature: expected a number from 0 to 2, got 'nan'."),
    ("/set top_p 0", "top_p: expected a number above 0, up to 1, got '0'."),
    ("/set top_k 0", "top_k: expected an integer from 1 to 2147483647, got '0'."),
    ("/set max_tokens 1.5", "max_tokens: expected an integer from 1 to 2147483647, got '1.5'."),
    ("/set seed x", "seed: expected an integer, got 'x'."),
    ("/set stop 'open", "stop: cannot read the stop sequences: No closing quotation."),
    ("/set search maybe", "search: expected on or off, got 'maybe'."),
    ("/set temperature", "/set temperature needs a value (sampling temperature, 0-2), or 'default'."),
    ("/set temprature 1", "Unknown setting 'temprature'. Did you mean 'temperature'?"),
])
def test_set_rejects_bad_values_with_one_usage_line(h: Harness, line: str, message: str) -> None:
    before = h.state.options
    out = h.say(line)
    assert message in out
    assert out.rstrip().endswith("Usage: /set [KEY VALUE|default]") and out.count("\n") == 1
    assert h.state.options == before


def test_set_default_restores_the_profile_value(h: Harness) -> None:
    h.say("/set temperature 0.1")
    assert h.say("/set temperature default").strip() == "temperature = 0.7"
    assert h.state.options.temperature == 0.7
    h.say("/set seed 1")
    assert h.say("/set seed unset").strip() == "seed = -"
    assert h.state.options.seed is None


def test_set_alone_shows_every_setting(h: Harness) -> None:
    h.say("/set seed 5")
    lines = h.say("/set").splitlines()
    assert [line.split()[0] for line in lines] == ["temperature", "top_p", "top_k", "max_tokens", "seed", "stop",
                                                     "context_window", "search"]
    assert "0.7" in lines[0] and "(profile)" in lines[0]
    assert "5" in lines[4] and "(set here)" in lines[4]


# ----------------------------------------------------------------------------------- model and profile


@pytest.mark.parametrize(("line", "think", "budget", "label"), [
    ("/think on", True, None, "on"), ("/think OFF", False, None, "off"), ("/think auto", None, None, "auto"),
    ("/think 2048", True, 2048, "on (2,048)"),
])
def test_think(h: Harness, line: str, think: bool | None, budget: int | None, label: str) -> None:
    out = h.say(line)
    assert (h.state.options.think, h.state.options.thinking_budget) == (think, budget)
    assert h.state.thinking_label() == label and out.startswith(f"Thinking: {label}")


@pytest.mark.parametrize("arg", ["maybe", "0", "-5", "on off"])
def test_think_rejects_other_words(h: Harness, arg: str) -> None:
    assert h.say(f"/think {arg}").strip() == (
        f"'{arg}' is not on, off, auto or a token budget. Usage: /think [on|off|auto|BUDGET]")
    assert h.state.options.think is None


def test_think_alone_shows_the_setting(h: Harness) -> None:
    assert h.say("/think").strip() == "Thinking: auto"


def test_model_switches_and_warns_about_unknown_names(h: Harness) -> None:
    assert h.say("/model qwen3:8b").strip() == "Model: qwen3:8b"
    assert h.state.options.model == h.state.profile.model == "qwen3:8b"
    assert h.say("/model llama3.2").strip() == "Model: llama3.2"  # Ollama's implicit :latest
    assert "did you mean qwen3:8b?" in h.say("/model qwen3:9b")
    assert h.state.options.model == "qwen3:9b"
    listing = h.say("/model")
    assert listing.startswith("Model: qwen3:9b") and "qwen3:0.6b" in listing
    assert "no spaces" in h.say("/model a b")


def test_profile_switch_keeps_the_conversation_and_takes_the_new_options(h: Harness) -> None:
    h.turn("hi")
    h.say("/set seed 3")
    out = h.say("/profile cloud")
    assert out.splitlines() == [
        "Profile cloud: bailian · qwen-plus · http://127.0.0.1:9/v1; the conversation (1 turn) continues.",
        "The conversation keeps its system prompt; /system shows or replaces it.",
        "Kept from this chat: seed = 3."]  # /set survives a switch where it still applies (issue 17)
    assert h.state.profile is CLOUD and h.state.provider.profile is CLOUD
    assert h.state.options == replace(ChatOptions.from_profile(CLOUD), seed=3)
    assert [e.user for e in h.state.conversation.exchanges] == ["hi"]
    assert h.state.conversation.system == "Be terse."


def test_profile_switch_to_the_same_persona_says_nothing_about_it(h: Harness) -> None:
    assert h.say("/profile local").strip() == "Profile local: ollama · qwen3:0.6b · http://127.0.0.1:9."


def test_profile_switch_failure_keeps_everything(h: Harness) -> None:
    provider = h.state.provider
    out = h.say("/profile broken")
    assert out.strip() == "Still using profile local."
    assert [type(e) for e in h.errors] == [MissingApiKey]
    assert h.state.profile is LOCAL and h.state.provider is provider


def test_profile_errors_and_listing(h: Harness) -> None:
    assert h.say("/profile lokal").strip() == (
        "No profile 'lokal'. Did you mean 'local'? Known: broken, cloud, local. Usage: /profile [NAME]")
    listing = h.say("/profile").splitlines()
    assert listing[0].startswith(" * local") and listing[1].startswith("   cloud")


# ------------------------------------------------------------------------------------- conversation


def test_system_shows_sets_and_clears(h: Harness) -> None:
    assert h.say("/system").strip() == "System prompt: Be terse."
    h.say("/system You are a pirate.\nAlways say arr.")
    assert h.state.conversation.system == "You are a pirate.\nAlways say arr."
    h.say("/system --clear")
    assert h.state.conversation.system is None
    assert "No system prompt" in h.say("/system")


def test_clear_keeps_the_system_prompt(h: Harness) -> None:
    h.turn("one")
    h.say("/system Be kind.")
    h.say("/clear")
    assert h.state.conversation.exchanges == [] and h.state.conversation.system == "Be kind."


def test_undo_and_retry(h: Harness) -> None:
    assert h.say("/undo").strip() == "Nothing to undo."
    assert h.run("/retry") == (Action(), "Nothing to retry yet.\n")
    h.turn("one")
    h.turn("two")
    assert h.run("/retry")[0] == Action(ask="two")
    assert [e.user for e in h.state.conversation.exchanges] == ["one"]
    assert h.say("/undo").strip() == "Removed the last exchange: one"
    assert h.state.conversation.exchanges == []


def test_history_is_shortened_and_marks_interruptions(h: Harness) -> None:
    assert h.say("/history").strip() == "No turns yet in this conversation."
    h.turn("a " * 100)
    h.turn("stop", "partial", interrupted=True)
    h.state.conversation.exchanges.append(Exchange(user="failed", model="qwen3:0.6b"))
    lines = h.say("/history").splitlines()
    assert lines[0] == "System: Be terse."
    assert lines[1].startswith("  1. you: a a a") and lines[1].endswith("…") and len(lines[1]) < 90
    assert lines[4] == "     qwen3:0.6b: partial [interrupted]"
    assert lines[6] == "     qwen3:0.6b:  [failed: not sent again]"


def test_usage_totals_since_start_with_cost(h: Harness) -> None:
    assert h.say("/usage").strip() == "No turns yet."
    h.turn("one", usage=Usage(prompt=100, completion=50))
    h.say("/profile cloud")
    h.turn("two", usage=Usage(prompt=1000, completion=500, reasoning=200))
    h.turn("three")  # no usage reported
    out = h.say("/usage")
    assert out.splitlines()[0] == ("Since start: 3 turns · prompt 1,100 · completion 550 (reasoning 200) · "
                                   "total 1,650 tokens · cost 0.0020 CNY")
    assert "(1 turn without a usage report not counted)" in out


def test_totals_keep_currencies_apart() -> None:
    totals = Tally()
    totals.add(Usage(prompt=1000, completion=0), Price(input=1, output=1, currency="CNY"))
    totals.add(Usage(prompt=1000, completion=0), Price(input=2, output=1, currency="USD"))
    totals.add(Usage(prompt=1000, completion=None), Price(input=2, output=1, currency="USD"))
    assert totals.costs == {"CNY": 1.0, "USD": 2.0} and totals.prompt == 3000 and totals.turns == 3


def test_context_tokens_estimate_then_reported(h: Harness) -> None:
    assert h.state.context_tokens() == (7, True)  # "Be terse.": 9 characters ~ 3 tokens, + 4 of framing
    h.turn("hi", usage=Usage(prompt=20, completion=7))
    assert h.state.context_tokens() == (27, False)


# ---------------------------------------------------------------------------------------------- /save


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)


def test_save_json_is_the_history_export_format(h: Harness, tmp_path: Path) -> None:
    """A chat that is not saved (this harness has no store) still writes the one export format."""
    h.turn("one", usage=Usage(prompt=10, completion=5, reasoning=2))
    h.state.conversation.exchanges[-1].reasoning = "hmm"
    h.state.conversation.exchanges[-1].images = (Image.from_bytes(PNG), Image.from_url("https://x.test/a.png"))
    h.turn("two", "par", interrupted=True)
    h.state.conversation.exchanges.append(Exchange(user="failed"))  # failed before any text: on record, empty
    target = tmp_path / "chat.json"
    assert h.say(f"/save {target}").strip() == f"Saved 3 turns to {target}"
    data = json.loads(target.read_text(encoding="utf-8"))
    assert (data["format"], data["version"], data["title"]) == ("llmchat-conversation", 1, "one")
    assert (data["profile"], data["provider"], data["model"], data["system"]) == (
        "local", "ollama", "qwen3:0.6b", "Be terse.")
    assert [(m["position"], m["role"], m["content"], m["interrupted"]) for m in data["messages"]] == [
        (0, "user", "one", False), (1, "assistant", "You said: one", False), (2, "user", "two", False),
        (3, "assistant", "par", True), (4, "user", "failed", False), (5, "assistant", "", False)]
    answer = data["messages"][1]
    assert answer["reasoning"] == "hmm" and answer["model"] == "qwen3:0.6b"
    assert answer["usage"]["prompt_tokens"] == 10 and answer["usage"]["reasoning_tokens"] == 2
    assert [(i["mime"], i["url"]) for i in data["messages"][0]["images"]] == [
        ("image/png", None), (None, "https://x.test/a.png")]
    assert data["messages"][0]["images"][0]["data"] == base64.b64encode(PNG).decode()
    h.turn("three")
    h.say(f"/save {target}")  # the same conversation saved again keeps its id and creation time
    again = json.loads(target.read_text(encoding="utf-8"))
    assert (again["id"], again["created"]) == (data["id"], data["created"]) and len(again["messages"]) == 8
    with Store(tmp_path / "history.db") as store:  # and `history import` takes it, images included
        imported = store.import_record(again)
        assert store.export_record(imported.id)["messages"] == again["messages"]
        resumed = store.load_conversation(imported.id)
    assert [(i.sha256, i.data, i.url) for i in resumed.exchanges[0].images] == [
        (i.sha256, i.data, i.url) for i in h.state.conversation.exchanges[0].images]  # resent on the next turn


def test_save_markdown_is_the_history_export_markdown(h: Harness, tmp_path: Path) -> None:
    h.turn("one")
    h.say(f"/save {tmp_path / 'chat.json'}")
    h.say(f"/save {tmp_path / 'chat.md'}")
    text = (tmp_path / "chat.md").read_text(encoding="utf-8")
    record = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    record["updated"] = re.search(r"^- updated: (.*)$", text, re.M)[1]  # the time of each /save
    assert text == markdown_transcript(*record_parts(record))
    assert text.startswith(f"# one\n\n- id: {record['id']}\n")
    assert "## System\n\nBe terse.\n\n## You\n\none\n\n## Assistant (qwen3:0.6b)\n\nYou said: one\n" in text


@pytest.mark.parametrize(("args", "message"), [
    ("", "Give a file name ending in .md or .json."),
    ("chat.txt", "'chat.txt' must end in .md or .json, which picks the format."),
])
def test_save_argument_errors(h: Harness, args: str, message: str) -> None:
    assert h.say(f"/save {args}").strip() == f"{message} Usage: /save FILE"


def test_save_unwritable_path_is_reported(h: Harness, tmp_path: Path) -> None:
    out = h.say(f"/save {tmp_path / 'missing' / 'chat.md'}")
    assert out.startswith("Cannot write ") and "No such file or directory" in out


def test_search_switches_web_search(h: Harness) -> None:
    assert h.say("/search").strip().startswith("Web search: auto")
    assert "Bailian profiles only" in h.say("/search on")
    assert h.state.options.search is True
    h.say("/search off")
    assert h.state.options.search is False
    assert h.say("/search maybe").strip() == "'maybe' is not on, off or auto. Usage: /search [on|off|auto]"
    assert h.state.options.search is False


def test_a_refused_question_is_retried_only_in_its_own_conversation(h: Harness) -> None:
    h.state.refused = "asked when the server was down"
    assert h.run("/retry") == (Action(ask="asked when the server was down"), "")
    h.state.refused = "asked when the server was down"
    h.say("/new")
    assert h.run("/retry") == (Action(), "Nothing to retry yet.\n")
