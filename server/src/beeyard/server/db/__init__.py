"""Persistence: the asyncpg pool, migrations, the embedded PostgreSQL, and one
query module per aggregate (plain SQL, no ORM)."""
