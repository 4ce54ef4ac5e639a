"""The TaskStore on PostgreSQL (asyncpg) and SQLite (aiosqlite), from one schema and one migration history."""
