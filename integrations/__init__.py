"""Integrations of stageguard with other frameworks, each behind its own extra."""
