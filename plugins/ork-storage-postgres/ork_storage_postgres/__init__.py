"""A PostgreSQL state backend for ork: ``ORK_DB=postgresql://user@host:5432/ork``."""
