"""`python -m llmchat` and the `llmchat` command: start the CLI with the collector held off (core/collector)."""

from llmchat.core import collector


def run() -> None:
    collector.hold()  # before the imports below: they are most of what start-up makes
    from llmchat.cli.app import main

    main()


if __name__ == "__main__":
    run()
