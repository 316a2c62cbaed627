"""The Typer app: options and one thin module per command; cli.app.main() is the only place errors become exit codes."""
