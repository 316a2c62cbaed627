"""What every part shares (events, errors, the conversation, pricing, tokens, images, safe text, the process's
Environment); imports no llmchat."""
