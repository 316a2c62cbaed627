"""Structured output: `--format json` and `--schema FILE`, from the request to the checked answer.

Why it is shaped this way:
- One value says what is wanted, as Ollama spells it: "json", or a JSON Schema object. The providers
  map it to their wire (`format` for Ollama; `response_format` json_object / json_schema for
  OpenAI-compatible servers), so `ask`, `batch` and later the REPL share one meaning.
- DashScope refuses `json_object` with a 400 unless the word "JSON" appears in the messages
  (bailian-api §2.6); `mention_json` adds a one-line instruction only when it is missing. It is a rule
  about the request, shared by every caller; it lives with the wire forms in `providers.json_mode`.
- The answer is checked, not trusted: servers without constrained decoding (vLLM without a guided
  backend, older DashScope models) may return prose, a fenced block, or JSON that ignores the schema.
  A failed check exits 1 and keeps the raw text (printed to stderr; saved with the turn).
- JSON Schema is the `jsonschema` package's: its `check_schema` (the Draft the schema's `$schema`
  names, 2020-12 by default) refuses a malformed schema, and its validator checks every keyword of
  that draft. It is imported only when `--schema` is given (over 100 ms here, with referencing, rpds
  and attrs), so `--format json` and plain questions never pay for it.
- What jsonschema does not guard against is refused here, before any request: a `$ref` loop that
  never enters a property or item (validation would recurse forever), a local `$ref` to nothing, a
  reference to another document (never fetched), and nesting deeper than MAX_SCHEMA_DEPTH; an
  answer nested too deeply to check is exit 1, not a RecursionError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmchat.core.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from llmchat.core.events import TurnResult
    from llmchat.core.tools import ToolCall, ToolRecord
    from llmchat.engine.chat import TurnView
    from llmchat.providers import ChatOptions

FORMATS = ("json",)
SHOWN_ERRORS = 5

#: Keywords whose value is data, not a schema: never searched for $ref.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "required"})
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


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
    problem = _schema_problem(schema)
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
        """What jsonschema checks the same value against next: the $ref target (beside its siblings, as
        in Draft 2019-09 and later), the combinators, not/if/then/else and dependentSchemas."""
        target = _resolve(root, node.get("$ref"))
        subs = [target] if isinstance(target, dict) else []
        subs += [sub for key in ("allOf", "anyOf", "oneOf") if isinstance(node.get(key), list)
                 for sub in node[key] if isinstance(sub, dict)]
        subs += [node[key] for key in ("not", "if", "then", "else") if isinstance(node.get(key), dict)]
        dependent = node.get("dependentSchemas")
        subs += [sub for sub in dependent.values() if isinstance(sub, dict)] if isinstance(dependent, dict) else []
        return subs

    for where, node in nodes.values():
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return f"{where}.$ref {json.dumps(ref)} refers to another document, which llmchat does not fetch"
        if isinstance(ref, str) and _resolve(root, ref) is None:
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


def _validator_class(schema: Mapping[str, Any]) -> Any:
    """The jsonschema validator for the Draft the schema's `$schema` names (2020-12 when it names none).

    Imported here, not at the top: only `--schema` needs jsonschema (tests/test_structured.py checks)."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    return validator_for(schema, default=Draft202012Validator)


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """What makes the schema unusable according to its Draft's meta-schema (jsonschema's check_schema), or
    None. A `pattern` Python cannot compile is refused here too, rather than failing on the answer."""
    from jsonschema.exceptions import SchemaError

    try:
        _validator_class(schema).check_schema(schema)
    except SchemaError as exc:
        where = exc.json_path
        if exc.path and exc.path[-1] == "type" and exc.validator in ("anyOf", "enum"):
            return f"{where} must be one of {', '.join(_TYPES)} (or a list of them)"
        return f"{where}: {exc.message}"
    return None


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


def _type_name(value: Any) -> str:
    """The JSON type of a value, as a schema names it (true is a boolean, not an integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer()):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def validate(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every way `value` breaks `schema`, as "path: problem" strings in document order (empty: it matches).

    The checking is jsonschema's; only the wording of a type mismatch is ours ("expected integer, got
    string" reads better than a Python repr)."""
    validator = _validator_class(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    shown = []
    for error in errors:
        if error.validator == "type":
            wanted = error.validator_value
            names = [wanted] if isinstance(wanted, str) else list(wanted)
            shown.append(f"{error.json_path}: expected {' or '.join(names)}, got {_type_name(error.instance)}")
        else:
            shown.append(f"{error.json_path}: {error.message}")
    return shown


def _resolve(root: Any, ref: Any) -> Any:
    """A local reference ("#/$defs/Item") in the schema; None when it points nowhere. Used only to find
    $ref loops and dangling references before jsonschema would meet them."""
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

    def tool_call(self, call: ToolCall) -> None:
        self._inner.tool_call(call)

    def tool_done(self, record: ToolRecord) -> None:
        self._inner.tool_done(record)

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
