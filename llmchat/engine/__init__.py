"""One turn and one session: the turn loop, context policy, structured output, the wiring ask/REPL/batch share."""
