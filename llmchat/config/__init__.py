"""The config file and profiles: the Profile model, loading, validation, command-line overrides; needs core only."""
