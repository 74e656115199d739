"""Storage: SQLAlchemy Core tables, Alembic migrations, queries and the event bus."""
