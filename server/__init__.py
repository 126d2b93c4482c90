"""`stageguard serve`: the protection service (the `server` extra: FastAPI and uvicorn).

`stageguard.server.app.create_app(ServerConfig(...))` gives the ASGI application and
`stageguard.server.cli` runs it. This module imports nothing, so the command line can offer
`serve` (and explain what to install) without the extra.
"""
