"""Structured output: `--format json` and `--schema FILE`, from the request to the checked answer.

Why it is shaped this way:
- One value says what is wanted, as Ollama spells it: "json", or a JSON Schema object. The providers
  map it to their wire (`format` for Ollama; `response_format` json_object / json_schema for
  OpenAI-compatible servers), so `ask`, `batch` and later the REPL share one meaning.
- DashScope refuses `json_object` with a 400 unless the word "JSON" appears in the messages
  (bailian-api §2.6); `mention_json` adds a one-line instruction only when it is missing. It lives
  here, not in a provider, because it is a rule about the request, shared by every caller.
- The answer is checked, not trusted: servers without constrained decoding (vLLM without a guided
  backend, older DashScope models) may return prose, a fenced block, or JSON that ignores the schema.
  A failed check exits 1 and keeps the raw text (printed to stderr; saved with the turn).
- JSON Schema is checked in-house for the subset that structured-output schemas use (type, properties,
  required, items, enum, const, additionalProperties, min/max, lengths, pattern, anyOf/oneOf/allOf,
  local $ref). The `jsonschema` package would add a dependency and a slow import for the rare
  keyword beyond that; keywords not checked here are named once, so nothing is silently assumed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmchat.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from llmchat.chat import TurnView
    from llmchat.events import TurnResult
    from llmchat.providers import ChatOptions

FORMATS = ("json",)
JSON_OBJECT_INSTRUCTION = "Answer with a single JSON object."
JSON_SCHEMA_INSTRUCTION = "Answer with JSON only."
SHOWN_ERRORS = 5

#: Keywords the validator checks; any other standard keyword in a schema is reported as unchecked.
CHECKED = frozenset({
    "type", "properties", "required", "items", "enum", "const", "additionalProperties", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern",
    "anyOf", "oneOf", "allOf", "$ref",
})
#: Keywords whose value is data, not a schema: never searched for keywords.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "required"})
#: Keywords that only describe or organise (nothing to check).
ANNOTATIONS = frozenset({
    "$schema", "$id", "$defs", "definitions", "$comment", "title", "description", "default", "examples",
    "format", "readOnly", "writeOnly", "deprecated",
})


class StructuredOutputError(ProviderError):
    """The model answered, but not with JSON (or not with JSON that follows the schema): exit 1."""


def check_format(fmt: str | None) -> None:
    """`--format` is "json" or absent; anything else is a usage error before any request."""
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported.", hint="Use --format json, or leave it out.")


# ------------------------------------------------------------------------------------------- schema


def load_schema(path: str | Path) -> dict[str, Any]:
    """The JSON Schema in FILE; a ConfigError (exit 2) says why it cannot be used."""
    name = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Schema file {name} does not exist.", hint="Check the --schema path.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Schema file {name} is not UTF-8 text.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read schema file {name}: {exc.strerror or exc}.") from None
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"Schema file {name} is not valid JSON: {exc}.",
                          hint='A JSON Schema is a JSON object, e.g. {"type": "object", "properties": …}.') from None
    except RecursionError:
        schema = None  # nested deeper than Python's parser goes: reported as too deep just below
    if schema is None or _depth(schema) > MAX_SCHEMA_DEPTH:
        raise ConfigError(f"Schema file {name} is nested more than {MAX_SCHEMA_DEPTH} levels deep.",
                          hint="Real schemas nest a few levels; for recursive data use a $ref to a $defs entry.")
    if (problem := _ref_problem(schema)) is not None:
        loop = "loop" in problem
        raise ConfigError(f"Schema file {name} is not a usable JSON Schema: {problem}.",
                          hint="A recursive schema must recurse through properties or items (e.g. a tree's "
                          '"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}).' if loop else
                          'Local references look like "#/$defs/NAME" and must name an entry of the schema.')
    if not isinstance(schema, dict):
        raise ConfigError(f"Schema file {name} must hold a JSON object (a JSON Schema).",
                          hint="e.g. {\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}}}")
    problem = _schema_problem(schema, "$")
    if problem:
        raise ConfigError(f"Schema file {name} is not a usable JSON Schema: {problem}.")
    return schema


#: Deeper than any real schema (OpenAI accepts 10 levels of nesting), and far enough from Python's
#: recursion limit that checking the schema and validating an answer against it cannot overflow.
MAX_SCHEMA_DEPTH = 100


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a JSON value (counted without recursing)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _ref_problem(root: dict[str, Any]) -> str | None:
    """A local $ref that points nowhere, or a loop of $ref / allOf / anyOf / oneOf that comes back to
    where it started without going into a property or an item: `{"$ref": "#"}`, or two $defs that
    refer to each other. Checking a value against such a schema would never end, so it is refused up
    front. Recursion through properties or items is fine: each step goes one level into the value.
    """
    nodes: dict[int, tuple[str, dict[str, Any]]] = {}
    stack: list[tuple[Any, str, bool]] = [(root, "$", False)]
    while stack:  # every schema object in the document, with where it is
        node, where, named = stack.pop()
        if isinstance(node, dict):
            if not named:
                nodes.setdefault(id(node), (where, node))
            for key, value in node.items():
                if named or key not in _DATA_KEYWORDS:
                    stack.append((value, f"{where}.{key}", not named and key in ("properties", "$defs", "definitions")))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{n}]", False) for n, item in enumerate(node))

    def same_level(node: dict[str, Any]) -> list[dict[str, Any]]:
        """What `validate` checks the same value against next (a $ref replaces its siblings there)."""
        if "$ref" in node:
            target = _resolve(root, node["$ref"])
            return [target] if isinstance(target, dict) else []
        return [sub for key in ("allOf", "anyOf", "oneOf") if isinstance(node.get(key), list)
                for sub in node[key] if isinstance(sub, dict)]

    for where, node in nodes.values():
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and _resolve(root, ref) is None:
            return f"{where}.$ref {json.dumps(ref)} points to nothing in the schema"
    done: set[int] = set()
    for start, (where, node) in nodes.items():
        if start in done:
            continue
        path, on_path = [(node, iter(same_level(node)))], {start}
        while path:
            current, following = path[-1]
            nxt = next(following, None)
            if nxt is None:
                done.add(id(current))
                on_path.discard(id(current))
                path.pop()
            elif id(nxt) in on_path:
                at, back = nodes.get(id(current), (where, None))[0], nodes.get(id(nxt), ("$", None))[0]
                back = "itself" if back == at else back
                return f"{at} leads back to {back} through $ref without going into a property or item (a $ref loop)"
            elif id(nxt) not in done:
                on_path.add(id(nxt))
                path.append((nxt, iter(same_level(nxt))))
    return None


def _schema_problem(schema: Any, where: str) -> str | None:
    """The first structural mistake in a schema (a wrong type for a keyword), or None."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return f"{where} must be an object or a boolean"
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds
    if kinds is not None and (not isinstance(names, list) or any(k not in _TYPES for k in names)):
        return f"{where}.type must be one of {', '.join(_TYPES)} (or a list of them)"
    if "properties" in schema and not isinstance(schema["properties"], dict):
        return f"{where}.properties must be an object"
    if "required" in schema and not (isinstance(schema["required"], list)
                                     and all(isinstance(r, str) for r in schema["required"])):
        return f"{where}.required must be a list of property names"
    if "enum" in schema and not isinstance(schema["enum"], list):
        return f"{where}.enum must be a list"
    for key, value in schema.get("properties", {}).items():
        if (problem := _schema_problem(value, f"{where}.properties.{key}")) is not None:
            return problem
    for key in ("items", "additionalProperties"):
        if key in schema and (problem := _schema_problem(schema[key], f"{where}.{key}")) is not None:
            return problem
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                return f"{where}.{key} must be a non-empty list of schemas"
            for n, sub in enumerate(schema[key]):
                if (problem := _schema_problem(sub, f"{where}.{key}[{n}]")) is not None:
                    return problem
    return None


def unchecked_keywords(schema: Any) -> set[str]:
    """Keywords in the schema this module does not check (the server may still enforce them)."""
    found: set[str] = set()

    def walk(node: Any, in_properties: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_properties and key not in CHECKED and key not in ANNOTATIONS:
                    found.add(key)
                if in_properties or key not in _DATA_KEYWORDS:
                    walk(value, in_properties=key in ("properties", "$defs", "definitions") and not in_properties)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return found


def schema_name(schema: Mapping[str, Any]) -> str:
    """The `json_schema.name` OpenAI requires (^[a-zA-Z0-9_-]{1,64}$): the schema's title, else "answer"."""
    title = schema.get("title")
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", title).strip("_")[:64] if isinstance(title, str) else ""
    return name or "answer"


# ------------------------------------------------------------------------------------------ request


def response_format(fmt: str | Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's `response_format` for a format value: json_object for "json", json_schema for a schema."""
    if isinstance(fmt, Mapping):
        return {"type": "json_schema", "json_schema": {"name": schema_name(fmt), "schema": dict(fmt)}}
    return {"type": "json_object"}


def as_json_object(fmt: Mapping[str, Any]) -> dict[str, Any]:
    """A json_schema `response_format` in the form llama.cpp's server takes instead: json_object + schema."""
    schema = fmt.get("json_schema", {}).get("schema") if isinstance(fmt.get("json_schema"), Mapping) else None
    return {"type": "json_object", "schema": schema} if schema is not None else {"type": "json_object"}


def mention_json(messages: list[dict[str, Any]], fmt: str | Mapping[str, Any] = "json") -> list[dict[str, Any]]:
    """The messages, with a short instruction to answer in JSON unless one of them already says "JSON".

    DashScope (and OpenAI) refuse `response_format: json_object` with a 400 unless the word appears
    in the messages; saying it is also what makes the model comply rather than merely be constrained.
    The instruction joins an existing system message (models follow one system message best).
    """
    if any("json" in _text(m.get("content")).lower() for m in messages):
        return messages
    instruction = JSON_SCHEMA_INSTRUCTION if isinstance(fmt, Mapping) else JSON_OBJECT_INSTRUCTION
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{_text(messages[0].get('content'))}\n\n{instruction}".lstrip())
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


# ------------------------------------------------------------------------------------------- answer


def parse_answer(text: str, schema: Mapping[str, Any] | None = None) -> Any:
    """The answer as a JSON value, checked against `schema`; StructuredOutputError says what is wrong.

    A single ```json fence around the whole answer is tolerated: models without constrained
    decoding often add one, and the JSON inside is what was asked for.
    """
    stripped = _unfence(text.strip())
    if not stripped:
        raise StructuredOutputError("The model's answer is empty, not JSON.",
                                    hint="Retry, or say in the prompt what the JSON should contain.")
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        raise StructuredOutputError(f"The model's answer is not valid JSON: {exc}.",
                                    hint="The raw answer is shown above; retry, or use a model that "
                                    "supports JSON output.") from None
    except RecursionError:
        raise StructuredOutputError("The model's answer is JSON nested too deeply to read.",
                                    hint="The raw answer is shown above; retry.") from None
    if schema is not None:
        try:
            errors = validate(value, schema)
        except RecursionError:  # a recursive schema and an answer nested hundreds of levels deep
            errors = ["$: nested too deeply to check"]
        if errors:
            shown = "; ".join(errors[:SHOWN_ERRORS]) + (f"; and {len(errors) - SHOWN_ERRORS} more"
                                                         if len(errors) > SHOWN_ERRORS else "")
            raise StructuredOutputError(f"The model's JSON does not match the schema: {shown}.",
                                        hint="The raw answer is shown above; retry, or make the prompt "
                                        "describe the fields.")
    return value


def _unfence(text: str) -> str:
    match = re.fullmatch(r"```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```", text, flags=re.DOTALL)
    return match.group(1).strip() if match else text


_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False  # JSON true is not a number, though Python's bool is an int
    if kind == "integer":
        return isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    return kind == "number"


def _type_name(value: Any) -> str:
    return next(k for k in ("null", "boolean", "integer", "number", "string", "array", "object")
                if _is_type(value, k))


def validate(value: Any, schema: Any, root: Any = None, where: str = "$") -> list[str]:
    """Every way `value` breaks `schema`, as "path: problem" strings (empty: it matches)."""
    root = schema if root is None else root
    if schema is True or schema is None:
        return []
    if schema is False:
        return [f"{where}: no value is allowed here"]
    if not isinstance(schema, Mapping):
        return []
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        return [] if target is None else validate(value, target, root, where)
    errors: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is_type(value, k) for k in names):
            return [f"{where}: expected {' or '.join(names)}, got {_type_name(value)}"]
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        errors.append(f"{where}: {json.dumps(value, ensure_ascii=False)} is not one of "
                      f"{json.dumps(schema['enum'], ensure_ascii=False)}")
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{where}: must be {json.dumps(schema['const'], ensure_ascii=False)}")
    errors += _combinators(value, schema, root, where)
    if isinstance(value, dict):
        errors += _object(value, schema, root, where)
    elif isinstance(value, list):
        errors += _array(value, schema, root, where)
    elif isinstance(value, str):
        errors += _string(value, schema, where)
    elif _is_type(value, "number"):
        errors += _number(value, schema, where)
    return errors


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _resolve(root: Any, ref: Any) -> Any:
    """A local reference ("#/$defs/Item"); None for anything else (remote refs are not fetched)."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _combinators(value: Any, schema: Mapping[str, Any], root: Any, where: str) -> list[str]:
    errors = []
    for sub in schema.get("allOf", ()):
        errors += validate(value, sub, root, where)
    if "anyOf" in schema and not any(not validate(value, sub, root, where) for sub in schema["anyOf"]):
        errors.append(f"{where}: matches none of the anyOf alternatives")
    if "oneOf" in schema:
        matching = sum(not validate(value, sub, root, where) for sub in schema["oneOf"])
        if matching != 1:
            errors.append(f"{where}: matches {matching} of the oneOf alternatives (exactly one is required)")
    return errors


def _object(value: dict[str, Any], schema: Mapping[str, Any], root: Any, where: str) -> list[str]:
    errors = [f"{where}: '{name}' is required" for name in schema.get("required", ()) if name not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        path = f"{where}.{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"{where}[{json.dumps(name)}]"
        if name in properties:
            errors += validate(item, properties[name], root, path)
        elif extra is False:
            errors.append(f"{where}: '{name}' is not an allowed property")
        elif isinstance(extra, Mapping):
            errors += validate(item, extra, root, path)
    return errors


def _array(value: list[Any], schema: Mapping[str, Any], root: Any, where: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{where}: has {len(value)} items, fewer than {schema['minItems']}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where}: has {len(value)} items, more than {schema['maxItems']}")
    items = schema.get("items")
    if isinstance(items, (Mapping, bool)):
        for n, item in enumerate(value):
            errors += validate(item, items, root, f"{where}[{n}]")
    return errors


def _string(value: str, schema: Mapping[str, Any], where: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{where}: longer than {schema['maxLength']} characters")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            if re.search(pattern, value) is None:
                errors.append(f"{where}: does not match the pattern {pattern}")
        except re.error:
            pass  # an ECMA-only construct Python cannot compile: left to the server
    return errors


def _number(value: float, schema: Mapping[str, Any], where: str) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: {value} is less than the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{where}: {value} is more than the maximum {schema['maximum']}")
    low, high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_type(low, "number") and value <= low:
        errors.append(f"{where}: {value} must be more than {low}")
    if _is_type(high, "number") and value >= high:
        errors.append(f"{where}: {value} must be less than {high}")
    return errors


# ------------------------------------------------------------------------------------------- output


@dataclass(frozen=True)
class OutputFormat:
    """What `--format json` / `--schema FILE` ask of one turn: the request value and the answer's check."""

    schema: Mapping[str, Any] | None = None  # None: any JSON value

    @classmethod
    def from_flags(cls, fmt: str | None, schema_file: str | Path | None) -> OutputFormat | None:
        """None when neither flag was given; ConfigError (exit 2) for a bad value or schema file."""
        check_format(fmt)
        if schema_file is None:
            return cls() if fmt else None
        schema = load_schema(schema_file)
        unchecked = unchecked_keywords(schema)
        if unchecked:
            from llmchat.safe_text import sanitize  # the keys are the schema file's text

            print(sanitize(f"Note: the schema uses {', '.join(sorted(unchecked))}, which llmchat does not check "
                           "(the server may still apply it)."), file=sys.stderr)
        return cls(schema=schema)

    @property
    def value(self) -> str | Mapping[str, Any]:
        """`ChatOptions.format`: the schema, or "json"."""
        return self.schema if self.schema is not None else "json"

    def apply(self, options: ChatOptions) -> ChatOptions:
        return replace(options, format=self.value)

    def parse(self, text: str) -> Any:
        return parse_answer(text, self.schema)

    def view(self, inner: TurnView, *, fenced: bool) -> TurnView:
        """A view that shows the checked JSON instead of the streamed text (see StructuredView)."""
        return StructuredView(inner, self, fenced=fenced)

    def check(self, result: TurnResult) -> int:
        """After a finished turn: 0 when the answer is what was asked for, else StructuredOutputError."""
        try:
            self.parse(result.answer)
        except StructuredOutputError as exc:
            if result.finish_reason == "length":
                exc.hint = "The answer was cut off at the token limit (max_tokens); raise it and retry."
            raise
        return 0


class StructuredView:
    """Holds the answer back while it streams, then shows it checked and pretty-printed.

    Streaming half a JSON document helps no one and a pipe must receive valid JSON or nothing:
    on success the inner view gets the indented JSON (in a ```json fence for the Markdown terminal
    view, bare for plain output); on failure stdout gets nothing and the raw text goes out as a
    notice (stderr in plain mode), with the error raised afterwards by `OutputFormat.check`.
    Reasoning, notices and the usage line pass through unchanged.
    """

    def __init__(self, inner: TurnView, output: OutputFormat, *, fenced: bool) -> None:
        self._inner = inner
        self._output = output
        self._fenced = fenced

    def reasoning(self, text: str) -> None:
        self._inner.reasoning(text)

    def answer(self, text: str) -> None:
        pass

    def notice(self, text: str) -> None:
        self._inner.notice(text)

    def close(self, result: TurnResult) -> None:
        if result.finish_reason is not None and not result.interrupted:
            try:
                value = self._output.parse(result.answer)
            except StructuredOutputError:
                if result.answer.strip():
                    self._inner.notice(f"Raw answer (not the JSON asked for):\n{result.answer}")
            else:
                shown = json.dumps(value, indent=2, ensure_ascii=False)
                self._inner.answer(f"```json\n{shown}\n```" if self._fenced else shown)
        self._inner.close(result)
