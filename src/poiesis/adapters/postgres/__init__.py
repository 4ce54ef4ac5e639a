"""PostgreSQL through asyncpg alone: the task documents' SQL, its errors as the port's, and the
recorder's store (a Task Recorder starts in every task Pod, without SQLAlchemy)."""
