"""`llmchat batch`: many prompts from a file, concurrently, to a resumable JSONL output."""
