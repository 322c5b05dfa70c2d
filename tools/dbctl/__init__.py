"""dbctl: sqlx-compatible PostgreSQL migrations for the Kiro dev environment."""

__version__ = "0.1.0"
