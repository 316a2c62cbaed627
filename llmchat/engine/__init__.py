"""One turn and one session: the turn loop, context, structured output, and the ask/pull/history/usage work."""
