"""`llmchat profiles`, `models`, `pull` and `doctor`: what is configured, what the server has, is it working."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmchat.cli.options import ConfigOpt, ModelOpt, ProfileOpt, app, command_flags, environment_of


@app.command()
def profiles(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """List the profiles: name, provider, model and where it points; the default is marked."""
    from llmchat.cli.info import print_profiles

    print_profiles(command_flags(ctx, config=config).config, environment_of(ctx))


@app.command()
def models(ctx: typer.Context, profile: ProfileOpt = None, config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """List the models the profile's server offers."""
    from llmchat.cli.info import print_models

    print_models(command_flags(ctx, profile=profile, config=config), environment_of(ctx), as_json=as_json)


@app.command()
def pull(
    ctx: typer.Context,
    model_name: Annotated[Optional[str], typer.Argument(
        metavar="MODEL", help="The model to download, e.g. qwen3:8b (default: the profile's model).",
        show_default=False)] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Download a model into the profile's Ollama server, with progress."""
    from llmchat.engine.pull import run_pull

    raise typer.Exit(run_pull(command_flags(ctx, profile=profile, config=config), model_name, environment_of(ctx)))


@app.command()
def doctor(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Also time a one-token request (a real, tiny, model call).")] = False,
) -> None:
    """Check each profile (or -p NAME): config, key, server, model, thinking and vision; ✓/✗ with the fix.

    Exit 0 when every check passed, 1 otherwise.
    """
    from llmchat.cli.doctor import run_doctor

    flags = command_flags(ctx, profile=profile, config=config, model=model)
    raise typer.Exit(run_doctor(flags, environment_of(ctx), probe=probe))
