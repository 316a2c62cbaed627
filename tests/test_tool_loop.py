"""The tool loop (engine/chat.run_turn + engine/tooling.py) on both wires, through the real clients.

The providers and the HTTP are real (the `ollama` / `openai` clients against the fake server); the
toolbox here is a recording stand-in, because what is under test is the engine: the order of calls,
approval, the records, what goes back to the model, and the bounds. The real toolbox (llmchat/tools)
has its own tests; the CLI and the terminal approval are tested end to end in test_tools_cli.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from toolreplies import ollama_answer, ollama_calls, openai_answer, openai_calls

from llmchat.core.conversation import Conversation
from llmchat.core.tools import NO_APPROVER, Decision, ToolCall, ToolSpec
from llmchat.engine.chat import run_turn
from llmchat.providers import ChatOptions
from llmchat.providers.ollama import OllamaProvider
from llmchat.providers.openai_compat import OpenAICompatProvider

WEATHER = ToolSpec("weather", "Current weather for a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "command")
CLOCK = ToolSpec("time", "The local time", {"type": "object", "properties": {}}, "builtin", trusted=True)


class Box:
    """A toolbox that records what ran."""

    def __init__(self, *specs: ToolSpec, fail: bool = False, interrupt: bool = False) -> None:
        self.specs = specs or (WEATHER,)
        self.ran: list[ToolCall] = []
        self.trusted: set[str] = {s.name for s in self.specs if s.trusted}
        self.unsupported: set[str] = set()
        self.fail = fail
        self.interrupt = interrupt

    def offered(self) -> tuple[ToolSpec, ...]:
        return self.specs

    def spec(self, name: str) -> ToolSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    def needs_approval(self, name: str) -> bool:
        return name not in self.trusted

    def trust(self, name: str) -> None:
        self.trusted.add(name)

    def describe(self, call: ToolCall) -> str:
        return f"would run {call.name}"

    def run(self, call: ToolCall) -> tuple[str, str]:
        self.ran.append(call)
        if self.interrupt:
            raise KeyboardInterrupt
        if self.fail:
            return "error", "exit status 6: could not resolve host"
        return "ok", f"晴, 22°C in {call.arguments.get('city', '?')}"


class Answers:
    """An approval answering from a script; records what it was asked."""

    def __init__(self, *decisions: Decision) -> None:
        self.decisions = list(decisions)
        self.asked: list[tuple[str, str]] = []

    def ask(self, spec: ToolSpec, call: ToolCall, description: str) -> Decision:
        self.asked.append((spec.name, description))
        return self.decisions.pop(0)


class View:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def reasoning(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...

    def notice(self, text: str) -> None:
        self.lines.append(f"notice: {text}")

    def tool_call(self, call: ToolCall) -> None:
        self.lines.append(f"call: {call.signature()}")

    def tool_done(self, record: Any) -> None:
        self.lines.append(f"done: {record.status}")

    def close(self, result: Any) -> None:
        self.lines.append("closed")


def bailian(fake) -> OpenAICompatProvider:
    return OpenAICompatProvider(base_url=f"{fake.url}/compatible-mode/v1", api_key="sk-x", read_timeout=10,
                                bailian=True, key_variable=None, region=None)


def ollama(fake, capabilities: frozenset[str] | None = frozenset({"completion", "tools"})) -> OllamaProvider:
    if capabilities is not None and "tools" in capabilities:
        fake.tool_models.add("qwen3:8b")  # the fake answers 400 "does not support tools" for the others
    provider = OllamaProvider(fake.url, 10)
    provider._capabilities["qwen3:8b"] = capabilities  # what /api/show would have said
    return provider


def chat_bodies(fake) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path.endswith(("/chat/completions", "/api/chat"))]


# ------------------------------------------------------------------------------------------ OpenAI wire


def test_parallel_calls_assembled_from_deltas_run_in_order_and_go_back(fake_server):
    fake_server.enqueue(
        openai_calls(("call_0bdc", "weather", ['{"city":', ' "杭', '州"}']),
                     ("call_1xyz", "weather", ['{"city": "Paris"}'])),
        openai_answer("Both mild."))
    box, approval, view = Box(), Answers(Decision(True), Decision(True)), View()
    conversation = Conversation()
    result, error = run_turn(conversation, "weather?", bailian(fake_server), ChatOptions(model="qwen-plus"), view,
                             tools=box, approval=approval)
    assert error is None and result.answer == "Both mild."
    assert [c.arguments for c in box.ran] == [{"city": "杭州"}, {"city": "Paris"}]
    first, second = chat_bodies(fake_server)
    assert first["tools"] == [WEATHER.wire()] and first["tool_choice"] == "auto"
    assert first["parallel_tool_calls"] is True
    assistant, tool_a, tool_b = second["messages"][-3:]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0bdc", "call_1xyz"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "杭州"}
    assert (tool_a["role"], tool_a["tool_call_id"], tool_a["content"]) == ("tool", "call_0bdc", "晴, 22°C in 杭州")
    assert tool_b["tool_call_id"] == "call_1xyz"
    assert view.lines[:4] == ['call: weather(city="杭州")', "done: ok", 'call: weather(city="Paris")', "done: ok"]
    # the usage line counts both model calls
    assert result.usage.prompt == 30 and result.usage.completion == 8 and result.requests == 2
    # the exchange keeps the round, and a later question re-sends it
    sent = conversation.messages("and tomorrow?")
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "assistant", "user"]


def test_invalid_argument_json_goes_back_as_the_calls_error_and_nothing_runs(fake_server):
    fake_server.enqueue(openai_calls(("call_bad", "weather", ['{"city": "Pa']), ), openai_answer("Sorry."))
    box = Box()
    result, error = run_turn(Conversation(), "weather?", bailian(fake_server), ChatOptions(model="qwen-plus"),
                             View(), tools=box, approval=Answers())
    assert error is None and box.ran == []
    record = result.rounds[0].calls[0]
    assert record.status == "error" and "not valid JSON" in record.result
    follow_up = chat_bodies(fake_server)[1]["messages"]
    assert follow_up[-2]["tool_calls"][0]["function"]["arguments"] == "{}"  # never "", never the broken text
    assert "not valid JSON" in follow_up[-1]["content"]


def test_declined_with_a_reason_tells_the_model_and_runs_nothing(fake_server):
    fake_server.enqueue(openai_calls(("call_1", "weather", ['{"city":"Oslo"}'])), openai_answer("OK."))
    box = Box()
    result, _ = run_turn(Conversation(), "weather?", bailian(fake_server), ChatOptions(model="qwen-plus"), View(),
                         tools=box, approval=Answers(Decision(False, reason="use the forecast site")))
    assert box.ran == []
    assert result.rounds[0].calls[0].status == "declined"
    assert chat_bodies(fake_server)[1]["messages"][-1]["content"] == "declined by the user: use the forecast site"


def test_always_trusts_the_tool_for_the_rest_of_the_session(fake_server):
    fake_server.enqueue(openai_calls(("c1", "weather", ['{"city":"A"}'])),
                        openai_calls(("c2", "weather", ['{"city":"B"}'])), openai_answer("Done."))
    box, approval = Box(), Answers(Decision(True, always=True))
    run_turn(Conversation(), "two cities", bailian(fake_server), ChatOptions(model="qwen-plus"), View(),
             tools=box, approval=approval)
    assert len(approval.asked) == 1 and [c.arguments["city"] for c in box.ran] == ["A", "B"]
    assert approval.asked[0] == ("weather", "would run weather")


def test_with_nobody_to_approve_untrusted_calls_are_declined_and_trusted_ones_run(fake_server):
    fake_server.enqueue(openai_calls(("c1", "weather", ['{"city":"A"}']), ("c2", "time", [""])), openai_answer("."))
    box, view = Box(WEATHER, CLOCK), View()
    result, _ = run_turn(Conversation(), "q", bailian(fake_server), ChatOptions(model="qwen-plus"), view, tools=box)
    weather, clock = result.rounds[0].calls
    assert (weather.status, weather.result) == ("declined", NO_APPROVER)
    assert clock.status == "ok" and [c.name for c in box.ran] == ["time"]
    assert any("no terminal" in line for line in view.lines)
    assert chat_bodies(fake_server)[1]["messages"][-3]["tool_calls"][1]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(("bound", "rounds"), [(1, "1 round"), (2, "2 rounds")])
def test_the_round_bound_stops_the_loop_and_keeps_everything(fake_server, bound: int, rounds: str):
    fake_server.enqueue(*(openai_calls((f"c{n}", "weather", [f'{{"city":"{n}"}}'])) for n in range(bound + 1)))
    box, view = Box(), View()
    result, error = run_turn(Conversation(), "q", bailian(fake_server), ChatOptions(model="qwen-plus"), view,
                             tools=box, approval=Answers(*[Decision(True)] * (bound + 1)), max_tool_rounds=bound)
    assert error is None and len(chat_bodies(fake_server)) == bound + 1
    assert [r.calls[0].status for r in result.rounds] == ["ok"] * bound + ["declined"]
    assert result.rounds[-1].calls[0].result == (
        f"not run: the limit of {rounds.replace('round', 'tool round')} for one question was reached")
    notice = f"Stopped after {rounds} of tool calls (max_tool_rounds); ask again to let the model go on."
    assert f"notice: {notice}" in view.lines, view.lines


def test_ctrl_c_in_a_tool_ends_the_turn_with_every_call_recorded(fake_server):
    fake_server.enqueue(openai_calls(("c1", "weather", ['{"city":"A"}']), ("c2", "weather", ['{"city":"B"}'])))
    conversation = Conversation()
    result, error = run_turn(conversation, "q", bailian(fake_server), ChatOptions(model="qwen-plus"), View(),
                             tools=Box(interrupt=True), approval=Answers(Decision(True)))
    assert result.interrupted and error is None
    assert [r.status for r in result.rounds[0].calls] == ["interrupted", "interrupted"]
    sent = conversation.messages("go on")  # every call has its result, so both APIs take the history
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]


def test_a_server_refusing_tools_gets_the_question_again_without_them(fake_server):
    fake_server.refuse_tools = True  # vLLM started without --enable-auto-tool-choice: its 400
    fake_server.enqueue(openai_answer("Plain answer."))
    box, view = Box(), View()
    result, error = run_turn(Conversation(), "q", bailian(fake_server), ChatOptions(model="qwen-plus"), view,
                             tools=box)
    assert error is None and result.answer == "Plain answer."
    first, second = chat_bodies(fake_server)
    assert "tools" in first and "tools" not in second
    assert any("Asking without tools" in line for line in view.lines)
    assert "qwen-plus" in box.unsupported  # not offered again this session


# ------------------------------------------------------------------------------------------ Ollama wire


def test_ollama_calls_with_ids_go_back_with_tool_name_and_tool_call_id(fake_server):
    fake_server.enqueue(ollama_calls({"name": "weather", "arguments": {"city": "Paris"}}), ollama_answer("Mild."))
    box = Box()
    result, error = run_turn(Conversation(), "weather?", ollama(fake_server), ChatOptions(model="qwen3:8b"), View(),
                             tools=box, approval=Answers(Decision(True)))
    assert error is None and result.answer == "Mild."
    first, second = chat_bodies(fake_server)
    assert first["tools"] == [WEATHER.wire()]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"] == [{"id": "call_00000000",
                                        "function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    assert tool == {"role": "tool", "tool_name": "weather", "tool_call_id": "call_00000000",
                    "content": "晴, 22°C in Paris"}
    assert result.usage.prompt == 70 and result.usage.completion == 9


def test_ollama_without_call_ids_numbers_them(fake_server):
    fake_server.enqueue(ollama_calls({"name": "weather", "arguments": {"city": "A"}},
                                     {"name": "weather", "arguments": {"city": "B"}}, call_ids=False),
                        ollama_answer("."))
    result, _ = run_turn(Conversation(), "q", ollama(fake_server), ChatOptions(model="qwen3:8b"), View(),
                         tools=Box(), approval=Answers(Decision(True), Decision(True)))
    assert [r.call.id for r in result.rounds[0].calls] == ["call_0", "call_1"]


def test_an_ollama_model_without_the_tools_capability_is_asked_without_them_once(fake_server):
    fake_server.enqueue(ollama_answer("Hi."), ollama_answer("Again."))
    box, view = Box(), View()
    provider = ollama(fake_server, frozenset({"completion"}))
    for question in ("one", "two"):
        run_turn(Conversation(), question, provider, ChatOptions(model="qwen3:8b"), view, tools=box)
    assert all("tools" not in body for body in chat_bodies(fake_server))
    assert sum("cannot call tools" in line for line in view.lines) == 1


def test_ollama_refusing_tools_with_400_is_asked_again_without(fake_server):
    """A server too old to report capabilities: the fake's own 400 "does not support tools" (the model is
    not one of its tool_models), then the same question without tools."""
    fake_server.enqueue(ollama_answer("Plain."))
    result, error = run_turn(Conversation(), "q", ollama(fake_server, None), ChatOptions(model="qwen3:8b"), View(),
                             tools=Box())
    assert error is None and result.answer == "Plain."
    first, second = chat_bodies(fake_server)
    assert "tools" in first and "tools" not in second


@pytest.mark.parametrize("fail", [True])
def test_a_failing_tool_is_an_error_result_not_a_crash(fake_server, fail):
    fake_server.enqueue(ollama_calls({"name": "weather", "arguments": {"city": "X"}}), ollama_answer("It failed."))
    result, error = run_turn(Conversation(), "q", ollama(fake_server), ChatOptions(model="qwen3:8b"), View(),
                             tools=Box(fail=fail), approval=Answers(Decision(True)))
    assert error is None and result.rounds[0].calls[0].status == "error"
    assert chat_bodies(fake_server)[1]["messages"][-1]["content"] == "exit status 6: could not resolve host"


def test_a_call_to_a_tool_not_offered_is_reported_to_the_model(fake_server):
    fake_server.enqueue(ollama_calls({"name": "rm_rf", "arguments": {}}), ollama_answer("ok"))
    box = Box()
    result, _ = run_turn(Conversation(), "q", ollama(fake_server), ChatOptions(model="qwen3:8b"), View(),
                         tools=box, approval=Answers())
    assert box.ran == [] and "no tool named 'rm_rf'" in result.rounds[0].calls[0].result


# ------------------------------------------------------- the fake server's own scripted calls (byte-faithful)


def test_dashscope_interleaved_calls_cut_inside_a_character_with_function_deltas(fake_server):
    from fakeserver import Call, Stream

    fake_server.enqueue(Stream(tool_calls=[Call("weather", {"city": "杭州"}, split_at=(11,), empty_delta=True),
                                           Call("weather", {"city": "上海"}, split_at=(10, 11))],
                               interleave_calls=True, cut_chars=True, reasoning="需要查天气"),
                        Stream(answer="两地都晴。"))
    box = Box()
    result, error = run_turn(Conversation(), "天气?", bailian(fake_server),
                             ChatOptions(model="qwen-plus", think=True), View(), tools=box,
                             approval=Answers(Decision(True), Decision(True)))
    assert error is None and result.answer == "两地都晴。"
    assert [c.arguments for c in box.ran] == [{"city": "杭州"}, {"city": "上海"}]
    follow_up = fake_server.chats[1]
    assert follow_up.sent_tool_calls[0]["function"]["arguments"] == '{"city": "杭州"}'
    assistant = [m for m in follow_up.messages if m["role"] == "assistant"][-1]
    assert assistant["reasoning_content"] == "需要查天气"  # thinking models get their reasoning back


def test_ollama_scripted_calls_together_without_ids(fake_server):
    from fakeserver import Call, Stream

    fake_server.enqueue(Stream(tool_calls=[Call("weather", {"city": "A"}), Call("weather", {"city": "B"})],
                               calls_together=True, call_ids=False), Stream(answer="Done."))
    result, error = run_turn(Conversation(), "q", ollama(fake_server), ChatOptions(model="qwen3:8b"), View(),
                             tools=Box(), approval=Answers(Decision(True), Decision(True)))
    assert error is None and result.answer == "Done."
    assert [r.call.arguments["city"] for r in result.rounds[0].calls] == ["A", "B"]
    assert [m["tool_name"] for m in fake_server.chats[1].tool_results] == ["weather", "weather"]


def test_llamacpp_repeats_the_id_and_name_in_every_delta_and_they_are_kept_once(fake_server):
    """The captured stream of a real llama-cpp-python server (tests/wire/llamacpp_stream_tool_call.sse)
    repeats the call's id and name in each of its deltas: joined, they would read get_weatherget_weather…"""
    from fakeserver import Raw

    fake_server.dialect = "llama.cpp"
    fake_server.enqueue(Raw.fixture("llamacpp_stream_tool_call.sse"), openai_answer("Mild."))
    box = Box(ToolSpec("get_weather", "", {"type": "object", "properties": {}}, "command"))
    provider = OpenAICompatProvider(base_url=f"{fake_server.url}/v1", api_key=None, read_timeout=10, bailian=False,
                                    key_variable=None, region=None)
    result, error = run_turn(Conversation(), "q", provider, ChatOptions(model="smollm2"), View(), tools=box,
                             approval=Answers(Decision(True)))
    assert error is None and result.answer == "Mild."
    (call,) = box.ran
    assert call.name == "get_weather" and call.id.startswith("call__0_get_weather_cmpl-")
    assert call.id.count("call__0") == 1 and isinstance(call.arguments, dict) and call.error is None
