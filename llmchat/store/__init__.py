"""The local SQLite history: schema and migrations, recording, queries and export records; depends on core only."""
