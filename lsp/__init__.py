"""stageguard.lsp: the language server (`stageguard lsp`, the `editor` extra)."""
