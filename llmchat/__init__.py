"""llmchat: chat with local and cloud LLMs from the terminal."""

__version__ = "0.1.0"
