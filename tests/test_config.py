"""Profiles and config: precedence, validation messages that point at the line, built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmchat.config.load import load_config
from llmchat.config.profile import REGIONS, ollama_host_url
from llmchat.config.session import Overrides, resolve
from llmchat.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LLMCHAT_CONFIG", "LLMCHAT_PROFILE", "OLLAMA_HOST", "LLMCHAT_TIMEOUT", "DASHSCOPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_builtins_when_there_is_no_file() -> None:
    config = load_config()
    assert config.path is None and config.default == "local"
    local, bailian = config.profiles["local"], config.profiles["bailian"]
    assert (local.provider, local.model, local.endpoint) == ("ollama", "qwen3:0.6b", "http://localhost:11434")
    assert (bailian.provider, bailian.model, bailian.endpoint) == ("bailian", "qwen-plus", REGIONS["beijing"])
    assert bailian.key_variable == "DASHSCOPE_API_KEY"


def test_regions_map_to_the_two_compatible_mode_urls(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.sg]\nprovider = "bailian"\nmodel = "qwen-max"\nregion = "singapore"\n')
    profile = load_config(path).profiles["sg"]
    assert profile.endpoint == "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    assert profile.key_variable == "DASHSCOPE_API_KEY"


def test_precedence_flags_over_environment_over_file_over_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'default_profile = "a"\n[profiles.a]\nprovider = "ollama"\nmodel = "m-a"\n'
                           '[profiles.b]\nprovider = "ollama"\nmodel = "m-b"\ntemperature = 0.2\n')
    monkeypatch.setenv("LLMCHAT_CONFIG", str(path))
    assert resolve(Overrides())[1].model == "m-a"  # file's default
    monkeypatch.setenv("LLMCHAT_PROFILE", "b")
    assert resolve(Overrides())[1].model == "m-b"  # environment beats the file
    _, profile = resolve(Overrides(profile="a", model="flag-model", temperature=1.5, think=False))
    assert (profile.name, profile.model, profile.temperature, profile.think) == ("a", "flag-model", 1.5, False)
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box")
    assert profile.endpoint == "http://gpu-box:11434"


def test_explicit_config_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.exit_code == 2 and "config init" in (info.value.hint or "")


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.x]\nprovider = "ollama"\nmodel = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and "line 3" in info.value.message


def test_unknown_key_names_file_line_key_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, '# comment\n[profiles.x]\nprovider = "ollama"\nmodel = "m"\ntemprature = 0.3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert f"{path}, line 5" in message and "temprature" in message and "Did you mean 'temperature'" in message


def test_wrong_type_says_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.x]\nprovider = "ollama"\nmodel = "m"\nthink = "yes"\n')
    with pytest.raises(ConfigError, match=r"line 4: profiles\.x\.think = 'yes' is not valid: expected true or false"):
        load_config(path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('provider = "olama"\nmodel = "m"', r"provider = 'olama' is unknown\. Did you mean 'ollama'"),
        ('provider = "bailian"\nmodel = "m"\nregion = "tokyo"', r"region = 'tokyo' is unknown"),
        ('provider = "openai"\nmodel = "m"', r"needs a base_url"),
        ('provider = "ollama"\nmodel = "m"\napi_key = "sk-secret"', r"can be read by other users"),
        ('provider = "ollama"\nmodel = "m"\ntoken = "sk-secret"', r"API keys are not read from the config file"),
        ('provider = "ollama"\nmodel = "m"\nprice = { input = 1 }', r"needs both input and output"),
        ('provider = "ollama"\nmodel = "m"\nmax_tokens = 0', r"max_tokens = 0 is out of range: expected an integer"),
        ('provider = "ollama"\nmodel = "m"\nthinking = "loud"', r"thinking = 'loud' is unknown"),
    ],
)
def test_validation_errors(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(write(tmp_path, f"[profiles.p]\n{body}\n"))
    assert "sk-secret" not in str(info.value)


def test_default_profile_naming_nothing(tmp_path: Path) -> None:
    expected = r"line 1: default_profile = 'lcoal' names no profile\. Did you mean 'local'"
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, 'default_profile = "lcoal"\n'))


def test_unknown_profile_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown profile 'nope'") as info:
        resolve(Overrides(profile="nope", config=str(write(tmp_path, ""))))
    assert "bailian, local" in (info.value.hint or "")


def test_price_and_options_are_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.q]\nprovider = "bailian"\nmodel = "qwen-plus"\nstop = "END"\n'
                           'price = { input = 0.0008, output = 0.002, currency = "CNY" }\noptions = { top_k = 5 }\n')
    profile = load_config(path).profiles["q"]
    assert profile.price is not None and profile.price.currency == "CNY" and profile.price.output == 0.002
    assert profile.stop == ("END",) and profile.options == {"top_k": 5}


@pytest.mark.parametrize(
    ("host", "url"),
    [(None, "http://localhost:11434"), ("localhost", "http://localhost:11434"),
     ("0.0.0.0:8080", "http://0.0.0.0:8080"), ("https://ollama.example.com", "https://ollama.example.com"),
     ("http://box", "http://box:11434"),
     ("http://127.0.0.1:11434/", "http://127.0.0.1:11434")],
)
def test_ollama_host_forms(host: str | None, url: str) -> None:
    assert ollama_host_url(host) == url


def test_example_config_is_the_template_init_writes_and_it_loads() -> None:
    root = Path(__file__).parent.parent
    example = root / "config.example.toml"
    assert example.read_text(encoding="utf-8") == (root / "llmchat" / "config" / "template.toml").read_text("utf-8")
    config = load_config(example)
    assert config.default == "local" and {"local", "qwen", "max", "bailian"} <= set(config.profiles)


def test_inline_key_in_a_private_file_is_used_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.q]\nprovider = "bailian"\nmodel = "qwen-plus"\napi_key = "sk-inline-123"\n')
    path.chmod(0o600)
    config = load_config(path)
    profile = config.profiles["q"]
    assert profile.api_key == "sk-inline-123" and profile.key_variable is None
    assert "sk-inline-123" not in repr(profile)
    assert any(w.startswith("profiles.q keeps its API key") for w in config.warnings)
    assert all("sk-inline-123" not in w for w in config.warnings)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        load_config(path)
    assert "sk-inline-123" not in str(info.value)


def test_the_example_profiles_for_other_services_load_when_uncommented(tmp_path: Path) -> None:
    import re

    root = Path(__file__).parent.parent
    text = (root / "config.example.toml").read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# (\[profiles\.|provider =|base_url =|model =|api_key_env =)", r"\1", text)
    profiles = load_config(write(tmp_path, uncommented)).profiles
    for name in ("deepseek", "siliconflow", "ark", "vllm", "lmstudio", "vision", "qwen-vl"):
        assert name in profiles, name
    assert profiles["deepseek"].endpoint == "https://api.deepseek.com/v1"
    assert profiles["ark"].key_variable == "ARK_API_KEY" and profiles["lmstudio"].key_variable is None


def test_the_profile_model_refuses_what_toml_would_coerce(tmp_path: Path) -> None:
    """Strict types from the one Profile model: a float is not an integer, 1 is not true, "1" not a number;
    a Literal value is unknown with a did-you-mean; every message keeps file, line and key."""
    cases = [
        ("top_k = 1.5", r"line 4: profiles\.x\.top_k = 1\.5 is not valid: expected an integer from 1 to"),
        ("think = 1", r"line 4: profiles\.x\.think = 1 is not valid: expected true or false"),
        ('temperature = "0.5"', r"line 4: profiles\.x\.temperature = '0\.5' is not valid: expected a number from 0"),
        ("temperature = nan", r"line 4: profiles\.x\.temperature = nan is out of range: expected a number from 0"),
        ("stop = [1]", r"line 4: profiles\.x\.stop = \[1\] is not valid: expected a string or a list of strings"),
        ('thinking = "hid"', r"line 4: profiles\.x\.thinking = 'hid' is unknown\. Did you mean 'hide'"),
        ("name = 'y'", r"line 4: Unknown key 'name' in profiles\.x\."),
    ]
    for line, message in cases:
        path = write(tmp_path, f'[profiles.x]\nprovider = "ollama"\nmodel = "m"\n{line}\n')
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    path = write(tmp_path, '[profiles.x]\nprovider = "bailian"\nmodel = "m"\nregion = "singapur"\n')
    with pytest.raises(ConfigError, match=r"region = 'singapur' is unknown\. Did you mean 'singapore'") as caught:
        load_config(path)
    assert caught.value.hint == "Allowed: beijing, singapore; or set base_url."


def test_the_file_keys_come_from_the_profile_model() -> None:
    from dataclasses import fields

    from llmchat.config.profile import PROFILE_KEYS, Profile

    assert set(PROFILE_KEYS) == {f.name for f in fields(Profile)} - {"name", "origin", "api_key"}
    assert set(REGIONS) == {"beijing", "singapore"}


def test_help_imports_no_pydantic_and_a_config_file_does(env, tmp_path: Path) -> None:
    """Profile is a plain frozen dataclass: `--help` stays light; the pydantic model is built when a file is read."""
    import subprocess
    import sys

    path = write(tmp_path, '[profiles.x]\nprovider = "ollama"\nmodel = "m"\n')
    code = ("import sys\nfrom llmchat.cli.app import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('pydantic' in sys.modules)\nfrom llmchat.config.load import load_config\n"
            f"load_config({str(path)!r})\nprint('pydantic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert done.stdout.strip().splitlines()[-2:] == ["False", "True"], done.stderr


def test_request_options_take_every_setting_the_profile_has() -> None:
    """ChatOptions.from_profile copies by field name, so a setting added to Profile reaches the request."""
    from dataclasses import replace

    from llmchat.config.profile import BUILTIN_PROFILES
    from llmchat.providers import ChatOptions

    profile = replace(BUILTIN_PROFILES["local"], think=True, thinking_budget=9, search=False, temperature=0.3,
                      top_p=0.9, top_k=5, max_tokens=7, seed=1, stop=("x",), context_window=4096, options={"a": 1})
    assert ChatOptions.from_profile(profile) == ChatOptions(
        model="qwen3:0.6b", think=True, thinking_budget=9, search=False, temperature=0.3, top_p=0.9, top_k=5,
        max_tokens=7, seed=1, stop=("x",), context_window=4096, extra={"a": 1})


def test_flags_named_like_profile_fields_set_them() -> None:
    from llmchat.config.profile import BUILTIN_PROFILES
    from llmchat.config.session import with_flags

    base = BUILTIN_PROFILES["local"]
    changed = with_flags(base, Overrides(profile="other", model="m2", system="s", think=True, temperature=0.2,
                                         search=True, show_thinking=False, config="c.toml"))
    assert (changed.name, changed.model, changed.system, changed.think, changed.temperature, changed.search,
            changed.thinking) == ("local", "m2", "s", True, 0.2, True, "hide")
    assert with_flags(base, Overrides()) is base


def test_every_set_setting_is_a_profile_and_request_field() -> None:
    """/set names settings by their Profile field, and they reach the request through ChatOptions."""
    from dataclasses import fields

    from llmchat.config.profile import PROFILE_KEYS
    from llmchat.providers import ChatOptions
    from llmchat.repl.settings import SETTINGS

    assert set(SETTINGS) <= set(PROFILE_KEYS) & {f.name for f in fields(ChatOptions)}
