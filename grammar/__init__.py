"""The stageguard grammar, shipped as package data."""
