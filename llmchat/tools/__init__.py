"""Running tools the model may call: the built-ins, command tools from the config (MCP servers later), each bounded."""
