"""`stageguard serve`: run the service with uvicorn (and `--openapi` to print its document)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stageguard.runtime.decision_log import FieldRule, LogPolicy, LogSettings
from stageguard.runtime.webhooks import networks
from stageguard.server.auth import TokenError, TokenFile, load_tokens

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="serve invoke and stage management over HTTP "
                           "(needs the `server` extra)")
    serve.add_argument("--registry", required=True, metavar="DIR",
                       help="the registry to serve (an existing directory)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="serve from N processes on the one port (each a replica of the "
                       "registry); /metrics adds up their counters")
    serve.add_argument("--tokens", metavar="FILE",
                       help="TOML file of [[token]] tables (name, role, token or sha256); "
                       "STAGEGUARD_ADMIN_TOKENS / STAGEGUARD_INVOKE_TOKENS add more")
    serve.add_argument("--no-auth", action="store_true",
                       help="serve without tokens (refused unless --host is a loopback "
                       "address)")
    serve.add_argument("--tls-cert", metavar="FILE",
                       help="serve HTTPS with this PEM certificate (chain) and --tls-key")
    serve.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    serve.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                       help="largest request body accepted (default 1 MiB)")
    serve.add_argument("--webhook-allow-host", action="append", metavar="HOST",
                       help="accept only webhook urls on this host (repeat for more); a "
                       "listed host is posted to whatever address it has")
    serve.add_argument("--webhook-allow-network", action="append", metavar="CIDR",
                       help="also post to addresses in this network (e.g. 10.0.0.0/8); "
                       "loopback, private, link-local and reserved addresses are refused "
                       "otherwise (repeat for more)")
    serve.add_argument("--invoke-subscriptions", action="store_true",
                       help="let invoke-only tokens send local rulesets that subscribe "
                       "webhooks (by default that takes an admin token)")
    serve.add_argument("--record-local-versions", type=int, default=0, metavar="N",
                       help="record up to N distinct invocation ruleset sets per local "
                       "stage as versions, in the background (default 0: none)")
    serve.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                       help="how often to look for registry changes made elsewhere")
    serve.add_argument("--max-staleness", type=float, default=None, metavar="SECONDS",
                       help="with --on-stale fail_closed: decisions answer `error` once the "
                       "registry was last read longer ago than this")
    serve.add_argument("--on-stale", choices=("serve", "fail_closed"), default="serve",
                       help="what a decision does past --max-staleness (default: serve)")
    serve.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                       help="keep the last good snapshot here and serve it at start when the "
                       "registry cannot be read")
    serve.add_argument("--public-metrics", action="store_true",
                       help="serve /metrics without a token")
    serve.add_argument("--flush-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long shutdown waits for queued webhooks")
    serve.add_argument("--scorer-threads", type=int, default=8, metavar="N",
                       help="threads that run scorers for metrics not sent with the payload")
    serve.add_argument("--no-webhooks", action="store_true",
                       help="decide without delivering subscriptions")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="close a connection whose request line and headers take longer")
    serve.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="close a connection whose request body takes longer after its "
                       "headers")
    serve.add_argument("--decision-log", metavar="FILE",
                       help="log every decision as a JSON line to FILE, rotated at "
                       "--decision-log-max-bytes (with --workers, FILE.wN per worker)")
    serve.add_argument("--decision-log-max-bytes", type=int, default=64 * 2**20,
                       metavar="BYTES", help="rotate the decision log at this size "
                       "(default 64 MiB; 5 older files are kept)")
    serve.add_argument("--decision-log-url", metavar="URL",
                       help="also POST decision events in gzip batches to this collector")
    serve.add_argument("--decision-log-store", action="store_true",
                       help="also log decisions into the PostgreSQL registry's own table")
    serve.add_argument("--log-payload", action="append", default=[], metavar="STAGES",
                       help="log the payload text of these stages (PROJECT/STAGE, fnmatch "
                       "patterns, comma-separated; by default no text is logged)")
    serve.add_argument("--log-mask", action="append", default=[], metavar="FIELD[@STAGES]",
                       help="replace a logged field with *** (metadata.user, metadata.*, "
                       "metrics.NAME, payload.input, payload), for the stages named")
    serve.add_argument("--log-drop", action="append", default=[], metavar="FIELD[@STAGES]",
                       help="leave a field out of the decision log, for the stages named")
    serve.add_argument("--log-level", default="info",
                       choices=("debug", "info", "warning", "error"))
    serve.add_argument("--no-access-log", action="store_true")
    serve.add_argument("--openapi", action="store_true",
                       help="print the OpenAPI document and exit")


def _decision_log(args: argparse.Namespace, registry: Path | str) -> LogSettings | None:
    """The decision-log settings the flags give (None: no sink named)."""

    if args.decision_log_store and isinstance(registry, Path):
        raise ValueError("--decision-log-store logs into a PostgreSQL registry; this one is a "
                         "directory (use --decision-log FILE)")
    if not (args.decision_log or args.decision_log_url or args.decision_log_store):
        if args.log_payload or args.log_mask or args.log_drop:
            raise ValueError("--log-payload/--log-mask/--log-drop shape a decision log: name "
                             "one with --decision-log, --decision-log-url or "
                             "--decision-log-store")
        return None
    rules = [FieldRule.parse(text, "mask") for text in args.log_mask] + \
        [FieldRule.parse(text, "drop") for text in args.log_drop]
    stages = tuple(p for text in args.log_payload for p in text.split(",") if p)
    path = args.decision_log
    index = os.environ.get(WORKER_INDEX_ENV)
    if path is not None and index is not None:  # one file per worker: no interleaved lines
        path = f"{path}.w{index}"
    if args.decision_log_max_bytes < 4096:
        raise ValueError("--decision-log-max-bytes is at least 4096")
    return LogSettings(file=path, url=args.decision_log_url,
                       postgres=str(registry) if args.decision_log_store else None,
                       policy=LogPolicy(stages, tuple(rules)),
                       max_bytes=args.decision_log_max_bytes)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from stageguard.server import logs
        from stageguard.server.app import ServerConfig, create_app
    except ImportError as exc:
        print(f"error: `stageguard serve` needs the server extra ({exc.name} is missing): "
              "pip install 'stageguard[server]'", file=sys.stderr)
        return EXIT_USAGE
    registry: Path | str = args.registry
    if not str(registry).startswith(("postgresql://", "postgres://")):
        registry = Path(args.registry)
        if not registry.is_dir():
            print(f"error: registry {registry} is not a directory (create it, or build into "
                  "it with `stageguard build --registry`)", file=sys.stderr)
            return EXIT_USAGE
    if args.on_stale == "fail_closed" and not (args.max_staleness or 0) > 0:
        print("error: --on-stale fail_closed needs --max-staleness SECONDS (above 0)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.max_body < 1024:
        print("error: --max-body is at least 1024 bytes", file=sys.stderr)
        return EXIT_USAGE
    if args.scorer_threads < 1:
        print("error: --scorer-threads is at least 1", file=sys.stderr)
        return EXIT_USAGE
    tokens = None
    if not args.no_auth:
        try:
            tokens = TokenFile(args.tokens) if args.tokens else load_tokens()
        except TokenError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not len(tokens) and not args.openapi:
            print("error: no tokens: give --tokens FILE or set STAGEGUARD_ADMIN_TOKENS / "
                  "STAGEGUARD_INVOKE_TOKENS (or --no-auth on a loopback address)",
                  file=sys.stderr)
            return EXIT_USAGE
    elif not _loopback(args.host):
        print(f"error: --no-auth serves anyone who can reach {args.host}; it is allowed on "
              "loopback addresses only", file=sys.stderr)
        return EXIT_USAGE
    if args.record_local_versions < 0:
        print("error: --record-local-versions is 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        networks(args.webhook_allow_network)
    except ValueError as exc:
        print(f"error: --webhook-allow-network: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        decision_log = _decision_log(args, registry)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = ServerConfig(
        registry=registry, tokens=tokens, max_body=args.max_body, decision_log=decision_log,
        webhook_allow_hosts=tuple(args.webhook_allow_host) if args.webhook_allow_host
        else None, webhook_allow_networks=tuple(args.webhook_allow_network or ()),
        invoke_subscriptions=args.invoke_subscriptions,
        record_local_versions=args.record_local_versions,
        poll_interval=args.poll_interval, public_metrics=args.public_metrics,
        max_staleness=args.max_staleness, on_stale=args.on_stale, cache_dir=args.cache_dir,
        flush_timeout=args.flush_timeout, deliver_webhooks=not args.no_webhooks,
        scorer_threads=args.scorer_threads)
    if args.openapi:
        app = create_app(config)
        try:
            json.dump(app.openapi(), sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        finally:
            app.state.runtime.close()
        return EXIT_OK
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_USAGE
    if args.tls_cert is not None:
        try:  # a bad pair is a sentence now, not a traceback from inside uvicorn later
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"error: cannot use the TLS certificate and key: {exc}", file=sys.stderr)
            return EXIT_USAGE
    logs.configure(args.log_level, access_log=not args.no_access_log)
    if args.tls_cert is None and not _loopback(args.host) and tokens is not None:
        logging.getLogger("stageguard.server").warning(
            "serving plain HTTP on a non-loopback address: bearer tokens cross the network "
            "in clear text; give --tls-cert/--tls-key or terminate TLS in a proxy in front")
    worker = os.environ.get(WORKER_ENV) == "1"
    if args.workers < 1:
        print("error: --workers is at least 1", file=sys.stderr)
        return EXIT_USAGE
    if not worker:
        try:  # fail with a sentence, not a traceback, when the port is taken
            probe = socket.create_server((args.host, args.port), reuse_port=False)
            probe.close()
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_USAGE
    if args.header_timeout <= 0 or args.body_timeout <= 0:
        print("error: --header-timeout and --body-timeout are more than 0", file=sys.stderr)
        return EXIT_USAGE
    if args.workers > 1 and not worker:
        return _supervise(args.workers)
    from stageguard.server.protocol import protocol

    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, access_log=False,
        http=protocol(args.header_timeout, args.body_timeout),
        lifespan="on", timeout_graceful_shutdown=max(1, int(args.flush_timeout)),
        server_header=False, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key))
    # The event loop shares the GIL with scorer threads (PII scans, rulesets compiled from
    # source) that are CPU-bound: with several of them busy, each GIL hand-off the loop
    # waits for is a switch interval (5 ms by default), and a request needs a few. 1 ms
    # keeps the loop's answers prompt under such load, for more frequent hand-offs.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal; answer that
    # with a clean exit, since a requested, completed shutdown is a success.
    signal.signal(signal.SIGTERM, _exit_ok)
    if worker:  # one of several processes on the port: the kernel spreads connections
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((args.host, args.port))
        server.run(sockets=[sock])
    else:
        server.run()
    return EXIT_OK


SWITCH_INTERVAL = 0.001  # seconds (sys.setswitchinterval)
WORKER_ENV = "STAGEGUARD_SERVE_WORKER"
WORKER_INDEX_ENV = "STAGEGUARD_SERVE_WORKER_INDEX"


def _supervise(workers: int) -> int:
    """Start `workers` copies of this `serve`, each a worker on the same port (SO_REUSEPORT)
    and a replica of the registry, with prometheus-client's multiprocess mode in a private
    directory so that /metrics, whichever worker answers it, adds up every worker's
    counters. A SIGTERM or SIGINT stops them all gracefully; if one exits, the others are
    stopped and the exit says so (a process manager restarts the whole)."""
    metrics_dir = tempfile.mkdtemp(prefix="stageguard-metrics-")
    env = {**os.environ, WORKER_ENV: "1", "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "stageguard.cli", *sys.argv[1:]]
    children = [subprocess.Popen(command, env={**env, WORKER_INDEX_ENV: str(i)})
                for i in range(workers)]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            ended = [c for c in children if c.poll() is not None]
            if ended or stopping:
                break
            time.sleep(0.2)
        if not stopping:
            logging.getLogger("stageguard.server").error(
                "a worker exited (code %s): stopping the others", ended[0].returncode)
            stop(signal.SIGTERM, None)
        codes = [c.wait() for c in children]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK if stopping and all(code == 0 for code in codes) else 1


def _exit_ok(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)
