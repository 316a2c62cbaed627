"""Structured output (`--format json`, `--schema FILE`), the DashScope "JSON" word rule, and web search on
the wire: the validator, the exact request bodies on the fake server, and `ask` end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeserver import Stream
from test_images import bailian, needs_ask_extras, ollama

from llmchat.core.errors import ConfigError
from llmchat.core.events import TurnResult
from llmchat.engine.structured import OutputFormat, StructuredOutputError, load_schema, parse_answer, validate
from llmchat.providers import ChatOptions
from llmchat.providers.json_mode import (
    JSON_OBJECT_INSTRUCTION,
    JSON_SCHEMA_INSTRUCTION,
    mention_json,
    response_format,
    schema_name,
)

PERSON = {
    "title": "Person record",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "person.json"
    path.write_text(json.dumps(PERSON), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ validator


def test_a_matching_value_has_no_errors() -> None:
    assert validate({"name": "Ada", "age": 36, "tags": ["a"]}, PERSON) == []
    assert validate({"name": "Ada", "age": 36.0}, PERSON) == []  # 36.0 is an integer in JSON Schema


@pytest.mark.parametrize(("value", "error"), [
    ({"age": 3}, "$: 'name' is a required property"),
    ({"name": "Ada", "age": "36"}, "$.age: expected integer, got string"),
    ({"name": "Ada", "age": True}, "$.age: expected integer, got boolean"),
    ({"name": "Ada", "age": -1}, "$.age: -1 is less than the minimum of 0"),
    ({"name": "", "age": 1}, "$.name: '' "),  # "is too short" before jsonschema 4.20, "should be non-empty" since
    ({"name": "Ada", "age": 1, "tags": ["c"]}, "$.tags[0]: 'c' is not one of ['a', 'b']"),
    ({"name": "Ada", "age": 1, "tags": ["a", "b", "a"]}, "$.tags: ['a', 'b', 'a'] is too long"),
    ({"name": "Ada", "age": 1, "extra": 1}, "$: Additional properties are not allowed ('extra' was unexpected)"),
    ([1], "$: expected object, got array"),
])
def test_each_violation_is_named_with_its_path(value, error) -> None:
    errors = validate(value, PERSON)
    assert any(e == error or (error.endswith(" ") and e.startswith(error)) for e in errors), errors


def test_refs_combinators_and_patterns() -> None:
    schema = {
        "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "type": "object",
        "properties": {"currency": {"$ref": "#/$defs/code"},
                       "amount": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]},
                       "kind": {"oneOf": [{"const": "buy"}, {"const": "sell"}]}},
    }
    assert validate({"currency": "EUR", "amount": None, "kind": "buy"}, schema) == []
    errors = validate({"currency": "euro", "amount": 0, "kind": "hold"}, schema)
    assert "$.currency: 'euro' does not match '^[A-Z]{3}$'" in errors
    assert "$.amount: 0 is not valid under any of the given schemas" in errors
    assert "$.kind: 'hold' is not valid under any of the given schemas" in errors
    assert [e.split(":")[0] for e in errors] == ["$.amount", "$.currency", "$.kind"]  # in document order


def test_answers_are_parsed_fences_tolerated_and_failures_explained() -> None:
    assert parse_answer('```json\n{"name": "Ada", "age": 1}\n```', PERSON) == {"name": "Ada", "age": 1}
    assert parse_answer(" [1, 2] ") == [1, 2]
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        parse_answer("Sure! Here is the JSON: {")
    with pytest.raises(StructuredOutputError, match="empty"):
        parse_answer("  ")
    with pytest.raises(StructuredOutputError) as caught:
        parse_answer('{"age": "x"}', PERSON)
    message = caught.value.message
    assert "does not match the schema" in message and "$: 'name' is a required property" in message
    assert "$.age: expected integer, got string" in caught.value.message
    assert caught.value.exit_code == 1


def test_schema_files_are_checked_when_loaded(tmp_path, schema_file) -> None:
    assert load_schema(schema_file) == PERSON
    bad = {"missing.json": None, "broken.json": "{", "list.json": "[1]",
           "type.json": '{"type": "text"}', "required.json": '{"required": "name"}'}
    phrases = {"missing.json": "does not exist", "broken.json": "not valid JSON",
               "list.json": "must hold a JSON object", "type.json": "$.type must be one of",
               "required.json": "$.required: 'name' is not of type 'array'"}
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_schema(tmp_path / name)
        assert phrases[name] in caught.value.message and caught.value.exit_code == 2


def test_every_keyword_of_the_draft_is_checked_and_names_are_openai_safe() -> None:
    """jsonschema checks what the in-house validator used to name as unchecked (multipleOf, uniqueItems,
    dependentRequired …); `format` stays an annotation, as the 2020-12 draft says."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2},
                                               "t": {"type": "array", "uniqueItems": True},
                                               "mail": {"type": "string", "format": "email"}},
              "dependentRequired": {"n": ["t"]}}
    assert validate({"n": 3, "t": [1, 1], "mail": "not an address"}, schema) == [
        "$.n: 3 is not a multiple of 2", "$.t: [1, 1] has non-unique elements"]
    assert validate({"n": 4}, schema) == ["$: 't' is a dependency of 'n'"]
    assert validate({"n": 4, "t": [1, 2], "mail": "x"}, schema) == []
    assert schema_name(PERSON) == "Person_record" and schema_name({}) == "answer"


def test_the_draft_named_by_dollar_schema_is_the_one_checked(tmp_path) -> None:
    """Draft 4 spells exclusiveMinimum as a boolean; 2020-12 (the default) as a number."""
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "minimum": 0, "exclusiveMinimum": True}
    path = tmp_path / "d4.json"
    path.write_text(json.dumps(draft4))
    assert load_schema(path) == draft4
    assert validate(0, draft4) and validate(1, draft4) == []
    path.write_text(json.dumps({"minimum": 0, "exclusiveMinimum": True}))
    with pytest.raises(ConfigError, match=r"\$\.exclusiveMinimum: True is not of type 'number'"):
        load_schema(path)


def test_a_pattern_python_cannot_compile_and_a_remote_ref_are_refused_when_loaded(tmp_path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"type": "string", "pattern": "(unclosed"}')
    with pytest.raises(ConfigError, match=r"\$\.pattern: '\(unclosed' is not a 'regex'"):
        load_schema(path)
    path.write_text('{"$ref": "https://example.com/person.json"}')
    with pytest.raises(ConfigError, match="refers to another document, which llmchat does not fetch"):
        load_schema(path)


# ------------------------------------------------------------------------------------ the JSON word


def test_the_json_word_rule() -> None:
    plain = [{"role": "user", "content": "a fruit please"}]
    assert mention_json(plain) == [{"role": "system", "content": JSON_OBJECT_INSTRUCTION}, *plain]
    assert mention_json(plain, PERSON)[0] == {"role": "system", "content": JSON_SCHEMA_INSTRUCTION}
    with_system = [{"role": "system", "content": "Be brief."}, *plain]
    assert mention_json(with_system)[0] == {"role": "system", "content": f"Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"}
    said = [{"role": "user", "content": "Give me json for a fruit"}]
    assert mention_json(said) is said
    parts = [{"role": "user", "content": [{"type": "text", "text": "as JSON"}, {"type": "image_url"}]}]
    assert mention_json(parts) is parts  # the word inside a text part counts


# ------------------------------------------------------------------------------------ wire, in process


def test_ollama_format_is_json_or_the_schema_itself(fake_server) -> None:
    provider = ollama(fake_server)
    question = [{"role": "user", "content": "a person"}]
    list(provider.stream(question, ChatOptions(model="qwen3:0.6b", format="json")))
    body = fake_server.last("/api/chat").body
    assert body["format"] == "json" and body["messages"] == question  # Ollama needs no instruction
    list(provider.stream(question, OutputFormat(schema=PERSON).apply(ChatOptions(model="qwen3:0.6b"))))
    assert fake_server.last("/api/chat").body["format"] == PERSON


def test_openai_response_format_json_object_and_json_schema(fake_server) -> None:
    provider = bailian(fake_server)
    question = [{"role": "user", "content": "a person"}]
    list(provider.stream(question, ChatOptions(model="qwen-plus", format="json")))
    body = fake_server.last("/chat/completions").body
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"] == [{"role": "system", "content": JSON_OBJECT_INSTRUCTION}, *question]
    list(provider.stream(question, ChatOptions(model="qwen-plus", format=PERSON)))
    body = fake_server.last("/chat/completions").body
    assert body["response_format"] == response_format(PERSON) == {
        "type": "json_schema", "json_schema": {"name": "Person_record", "schema": PERSON}}
    assert body["messages"][0] == {"role": "system", "content": JSON_SCHEMA_INSTRUCTION}


# ------------------------------------------------------------------------------------ view and check


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def reasoning(self, text: str) -> None:
        self.calls.append(("reasoning", text))

    def answer(self, text: str) -> None:
        self.calls.append(("answer", text))

    def notice(self, text: str) -> None:
        self.calls.append(("notice", text))

    def close(self, result: TurnResult) -> None:
        self.calls.append(("close", ""))


def turn(answer: str, finish: str | None = "stop") -> TurnResult:
    return TurnResult(model="m", answer=answer, finish_reason=finish)


def test_the_view_holds_the_answer_back_and_shows_it_checked() -> None:
    output = OutputFormat(schema=PERSON)
    inner = Recording()
    view = output.view(inner, fenced=False)
    view.reasoning("hm")
    view.answer('{"name": "Ada",')
    view.answer(' "age": 36}')
    view.close(turn('{"name": "Ada", "age": 36}'))
    assert inner.calls == [("reasoning", "hm"), ("answer", '{\n  "name": "Ada",\n  "age": 36\n}'), ("close", "")]
    assert output.check(turn('{"name": "Ada", "age": 36}')) == 0
    fenced = Recording()
    output.view(fenced, fenced=True).close(turn('{"name": "Ada", "age": 36}'))
    assert fenced.calls[0] == ("answer", '```json\n{\n  "name": "Ada",\n  "age": 36\n}\n```')


def test_an_invalid_answer_prints_nothing_to_stdout_keeps_the_raw_text_and_fails() -> None:
    output = OutputFormat()
    inner = Recording()
    output.view(inner, fenced=False).close(turn("I cannot do JSON, sorry."))
    assert inner.calls == [("notice", "Raw answer (not the JSON asked for):\nI cannot do JSON, sorry."), ("close", "")]
    with pytest.raises(StructuredOutputError):
        output.check(turn("I cannot do JSON, sorry."))
    with pytest.raises(StructuredOutputError) as caught:
        output.check(turn('{"cut": "of', finish="length"))
    assert "max_tokens" in caught.value.hint
    failed = Recording()
    output.view(failed, fenced=False).close(turn("", finish=None))  # the call failed: nothing to check
    assert failed.calls == [("close", "")]


def test_output_format_from_flags(tmp_path, capsys) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"type": "integer", "multipleOf": 5}')
    assert OutputFormat.from_flags(None, path).schema == {"type": "integer", "multipleOf": 5}
    assert capsys.readouterr().err == ""  # nothing is left unchecked, so there is nothing to note
    with pytest.raises(StructuredOutputError, match=r"\$: 7 is not a multiple of 5"):
        OutputFormat.from_flags(None, path).parse("7")
    assert OutputFormat.from_flags(None, None) is None and OutputFormat.from_flags("json", None) == OutputFormat()
    with pytest.raises(ConfigError, match="--format 'yaml' is not supported"):
        OutputFormat.from_flags("yaml", None)


# --------------------------------------------------------------------------------------------- the CLI


_IMPORTS_AFTER = (
    "import sys\nfrom llmchat.cli.app import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print('jsonschema' in sys.modules, file=sys.stderr)"
)


@pytest.mark.parametrize(("argv", "imported"), [
    (["ask", "--format", "json", "hi"], False),
    (["batch", "{rows}", "--format", "json"], False),
    (["ask", "--schema", "{schema}", "hi"], True),
])
def test_jsonschema_is_imported_only_for_a_schema(
        env, config_file, fake_server, tmp_path, schema_file, argv, imported) -> None:
    """jsonschema costs an import of its own (and referencing, rpds, attrs): only --schema may load it."""
    import subprocess
    import sys

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": 1, "prompt": "hi"}\n')
    argv = [a.format(rows=rows, schema=schema_file) for a in argv]
    fake_server.enqueue(Stream(answer='{"name": "Ada", "age": 36}'))
    done = subprocess.run([sys.executable, "-c", _IMPORTS_AFTER, *argv], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.stderr.strip().splitlines()[-1] == str(imported), done.stderr
    assert fake_server.requests  # the command really ran a turn


def test_cli_bad_format_or_schema_exits_2_before_any_request(fake_server, config_file, llmchat, tmp_path) -> None:
    bad = llmchat("ask", "--format", "yaml", "hi")  # Typer's own choice error (the flag is a Choice)
    assert bad.code == 2 and "'yaml' is not" in bad.stderr and "'json'" in bad.stderr and "Traceback" not in bad.stderr
    missing = llmchat("ask", "--schema", str(tmp_path / "none.json"), "hi")
    assert missing.code == 2 and "does not exist" in missing.stderr
    assert not fake_server.requests


@needs_ask_extras()
def test_cli_format_json_on_ollama_prints_checked_json(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer='{"fruit":"apple","count":3}'))
    run = llmchat("ask", "--format", "json", "a fruit")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout) == {"fruit": "apple", "count": 3}
    assert run.stdout == '{\n  "fruit": "apple",\n  "count": 3\n}\n'
    body = fake_server.last("/api/chat").body
    assert body["format"] == "json" and body["messages"] == [{"role": "user", "content": "a fruit"}]


@needs_ask_extras()
def test_cli_invalid_json_exits_1_and_keeps_the_raw_text(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="Here you go: apple"))
    run = llmchat("ask", "--format", "json", "a fruit")
    assert run.code == 1
    assert run.stdout == ""  # a pipe gets valid JSON or nothing
    assert "Here you go: apple" in run.stderr and "not valid JSON" in run.stderr and "Traceback" not in run.stderr
    saved = llmchat("history", "show", "last")
    assert "Here you go: apple" in saved.stdout  # the raw answer is kept with the conversation


@needs_ask_extras()
def test_cli_schema_on_both_providers(fake_server, config_file, llmchat, schema_file) -> None:
    fake_server.enqueue(Stream(answer='{"name":"Ada","age":36}'), Stream(answer='{"name":"Ada","age":"old"}'))
    good = llmchat("ask", "--schema", str(schema_file), "a person")
    assert good.code == 0, good.stderr
    assert json.loads(good.stdout) == {"name": "Ada", "age": 36}
    assert fake_server.last("/api/chat").body["format"] == PERSON
    bad = llmchat("ask", "-p", "bailian", "--schema", str(schema_file), "a person")
    assert bad.code == 1 and "$.age: expected integer, got string" in bad.stderr and bad.stdout == ""
    body = fake_server.last("/chat/completions").body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "Person_record",
                                                                              "schema": PERSON}}


@needs_ask_extras()
def test_cli_dashscope_json_word_rule_on_the_wire(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer="{}"), Stream(answer="{}"))
    assert llmchat("ask", "-p", "bailian", "-s", "Be brief.", "--format", "json", "a fruit").code == 0
    body = fake_server.last("/chat/completions").body
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"] == [{"role": "system", "content": f"Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"},
                                {"role": "user", "content": "a fruit"}]
    assert llmchat("ask", "-p", "bailian", "--format", "json", "a fruit as JSON").code == 0
    assert fake_server.last("/chat/completions").body["messages"] == [{"role": "user", "content": "a fruit as JSON"}]


@needs_ask_extras()
def test_cli_json_record_with_format_json(fake_server, config_file, llmchat) -> None:
    fake_server.enqueue(Stream(answer='{"a": 1}'), Stream(answer="nope"))
    run = llmchat("ask", "--json", "--format", "json", "x")
    assert run.code == 0 and json.loads(json.loads(run.stdout)["answer"]) == {"a": 1}
    bad = llmchat("ask", "--json", "--format", "json", "x")
    assert bad.code == 1 and json.loads(bad.stdout)["answer"] == "nope" and "not valid JSON" in bad.stderr


# ------------------------------------------------------------------------------------------ web search


def test_profile_search_true_reaches_the_wire_and_the_flag_overrides_it(fake_server, config_file, llmchat) -> None:
    config_file.write_text(config_file.read_text().replace("retries = 0", "retries = 0\nsearch = true"))
    assert llmchat("ask", "-p", "bailian", "news today?").code == 0
    assert fake_server.last("/chat/completions").body["enable_search"] is True
    assert llmchat("ask", "-p", "bailian", "--no-search", "news today?").code == 0
    assert fake_server.last("/chat/completions").body["enable_search"] is False
    assert llmchat("ask", "-p", "vllm", "--search", "news today?").code == 0
    assert "enable_search" not in fake_server.last("/chat/completions").body  # a Bailian extension only
