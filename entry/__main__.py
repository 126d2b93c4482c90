"""`python -m stageguard`: the same as the `stageguard` command."""

from stageguard.cli.main import main

raise SystemExit(main())
