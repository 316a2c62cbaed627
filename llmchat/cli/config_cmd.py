"""`llmchat config path|init|show`: where the config file lives, a commented one, the effective values."""

from __future__ import annotations

from typing import Annotated

import typer

from llmchat.cli.options import ConfigOpt, command_flags, config_app, environment_of


@config_app.command("path")
def config_path_cmd(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Print where the config file is read from."""
    from llmchat.config.load import config_path
    from llmchat.core.safe_text import text_for

    environment = environment_of(ctx)
    path, _ = config_path(command_flags(ctx, config=config).config, environment.variables)
    print(text_for(environment.stdout, str(path)), file=environment.stdout)  # exact in a pipe


@config_app.command("init")
def config_init(
    ctx: typer.Context,
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config (never overwrites without --force)."""
    from llmchat.cli.info import init_config

    init_config(command_flags(ctx, config=config).config, environment_of(ctx), force=force)


@config_app.command("show")
def config_show(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Print the effective config as TOML; keys are never shown, only whether they are set."""
    from llmchat.cli.info import show_config

    show_config(command_flags(ctx, config=config).config, environment_of(ctx))


# --------------------------------------------------------------------------------------------- actions
