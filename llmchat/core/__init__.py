"""What every part shares (events, errors, the conversation, pricing, tokens, images, safe text); imports no llmchat."""
