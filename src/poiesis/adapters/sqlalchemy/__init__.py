"""The TaskStore on PostgreSQL (asyncpg) and SQLite (aiosqlite, and the sqlite3 module in worker
threads), from one schema and one migration history."""
