"""The stageguard compiler: source text to checked, versioned artifacts."""
