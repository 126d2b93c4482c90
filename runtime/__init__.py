"""The stageguard runtime: loads artifacts and decides."""
