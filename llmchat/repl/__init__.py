"""The interactive chat: the prompt-toolkit app, its state and the slash commands."""
