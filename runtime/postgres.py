"""The registry store in PostgreSQL (the `fleet` extra: psycopg 3).

One database is the system of record for every replica: stages, their immutable versions
(the canonical artifact bytes and digest, as the directory store keeps them in files) and an
append-only event log numbered by the store's revision. Every commit (a publish of one or
more stages, a pause, a resume) takes the revision row's lock first, so commits are
serialised and revision order is commit order: a reader catching up with `revision > last`
never skips an event. A commit NOTIFYs `stageguard_registry` with its revision.

Selected by a URL wherever a registry is named (`postgresql://…`); `migrate()` (and
`stageguard registry migrate URL`) applies the versioned schema. Nothing here is imported
by the runtime unless such a URL is used, and psycopg is imported only then.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.model import Artifact, StageType
from stageguard.runtime.registry import (
    Candidate,
    Change,
    Event,
    Index,
    Published,
    RegistryError,
    RevisionConflict,
    ServingChange,
    StageEntry,
    StageExists,
    VersionEntry,
    VersionNotFound,
    apply_serving,
    check_entry,
    choose_version,
    keep_serving,
    parse_artifact,
    verify_versions,
)

CHANNEL = "stageguard_registry"

# Each entry is one schema version; `migrate` applies those the database has not seen, in
# one transaction each. Never edit an applied entry: add the next.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE stageguard_meta (
        key text PRIMARY KEY,
        value bigint NOT NULL
    );
    INSERT INTO stageguard_meta VALUES ('revision', 0);
    CREATE TABLE stageguard_stages (
        project text NOT NULL,
        stage text NOT NULL,
        type text NOT NULL CHECK (type IN ('central', 'local')),
        paused boolean NOT NULL DEFAULT false,
        PRIMARY KEY (project, stage)
    );
    CREATE TABLE stageguard_versions (
        project text NOT NULL,
        stage text NOT NULL,
        version integer NOT NULL CHECK (version >= 1),
        digest text NOT NULL,
        artifact bytea NOT NULL,
        compiler text NOT NULL,
        published_by text NOT NULL,
        created_at text NOT NULL,
        PRIMARY KEY (project, stage, version),
        FOREIGN KEY (project, stage) REFERENCES stageguard_stages
    );
    CREATE TABLE stageguard_events (
        revision bigint NOT NULL,
        seq integer NOT NULL,
        kind text NOT NULL CHECK (kind IN ('published', 'paused', 'resumed')),
        project text NOT NULL,
        stage text NOT NULL,
        version integer,
        at text NOT NULL,
        PRIMARY KEY (revision, seq)
    );
    """,
    # 2: what serves (a rolled-back or promoted version, a shadow or rollout candidate),
    # the events that change it, and the decision log's table.
    """
    ALTER TABLE stageguard_stages ADD COLUMN active integer, ADD COLUMN candidate jsonb;
    ALTER TABLE stageguard_events DROP CONSTRAINT stageguard_events_kind_check;
    ALTER TABLE stageguard_events ADD CONSTRAINT stageguard_events_kind_check CHECK (kind IN
        ('published', 'paused', 'resumed', 'shadow', 'rollout', 'cleared', 'promoted',
         'rolled_back'));
    ALTER TABLE stageguard_events ADD COLUMN note text;
    CREATE TABLE stageguard_decisions (
        decision_id text PRIMARY KEY,
        at timestamptz NOT NULL,
        project text NOT NULL,
        stage text NOT NULL,
        version integer NOT NULL,
        status text NOT NULL,
        event jsonb NOT NULL
    );
    CREATE INDEX stageguard_decisions_stage_at ON stageguard_decisions (project, stage, at);
    """,
)


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _where(url: str) -> str:
    """The url without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (
        f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _file(project: str, stage: str, version: int) -> str:
    # Names hold no `/` (model.NAME), so this splits back unambiguously.
    return f"{project}/{stage}/v{version}.json"


def _unfile(entry: VersionEntry) -> tuple[str, str, int]:
    project, stage, leaf = entry.file.split("/")
    return project, stage, int(leaf[1:-len(".json")])


class PostgresRegistry:
    """`RegistryStore` over one PostgreSQL database (one connection, used under a lock;
    reconnected when it breaks)."""

    def __init__(self, url: str, *, publisher: str = "stageguard") -> None:
        try:
            import psycopg
        except ImportError as exc:  # the `fleet` extra
            raise RegistryError("a postgresql:// registry needs psycopg: pip install "
                                "'stageguard[fleet]'") from exc
        self.url = url
        self.where = _where(url)
        self.publisher = publisher
        self._psycopg = psycopg
        self._lock = threading.RLock()
        self._conn: Any = None
        self._listener: Any = None  # LISTENing, used by the one watching thread only

    def _jsonb(self, data: object) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(data)

    # -- connections

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = self._psycopg.connect(self.url, connect_timeout=10)
            except self._psycopg.Error as exc:
                raise RegistryError(f"cannot connect to {self.where}: {exc}") from exc
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A transaction on the connection (committed on success, rolled back otherwise);
        RegistryError for what the database refuses or a lost connection."""
        with self._lock:
            conn = self._connect()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except self._psycopg.errors.UndefinedTable as exc:
                raise RegistryError(f"{self.where} has no stageguard schema: run `stageguard "
                                    "registry migrate URL`") from exc
            except self._psycopg.OperationalError as exc:
                with contextlib.suppress(Exception):
                    conn.close()
                raise RegistryError(f"{self.where}: {exc}") from exc
            except self._psycopg.Error as exc:
                raise RegistryError(f"{self.where}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._listener):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            self._conn = self._listener = None

    def wait_for_change(self, timeout: float) -> bool:
        """Block until a commit's NOTIFY arrives (True) or `timeout` passes (False). The
        event log stays the truth: callers read the revision after either."""
        if self._listener is None or self._listener.closed:
            try:
                self._listener = self._psycopg.connect(self.url, autocommit=True,
                                                       connect_timeout=10)
                self._listener.execute(f"LISTEN {CHANNEL}")
            except self._psycopg.Error as exc:
                self._listener = None
                raise RegistryError(f"cannot listen on {self.where}: {exc}") from exc
        try:
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                return True
        except self._psycopg.Error as exc:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None
            raise RegistryError(f"lost the listener on {self.where}: {exc}") from exc
        return False

    def migrate(self) -> int:
        """Apply the schema versions the database lacks; the schema version after."""
        with self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS stageguard_schema (version integer NOT "
                        "NULL)")
            cur.execute("LOCK TABLE stageguard_schema IN EXCLUSIVE MODE")
            cur.execute("SELECT max(version) FROM stageguard_schema")
            current = cur.fetchone()[0] or 0
            for number, statement in enumerate(MIGRATIONS[current:], start=current + 1):
                cur.execute(statement)
                cur.execute("INSERT INTO stageguard_schema VALUES (%s)", (number,))
            return len(MIGRATIONS)

    # -- reading

    def revision(self) -> int:
        with self._transaction() as cur:
            return self._revision(cur)

    @staticmethod
    def _revision(cur: Any, lock: bool = False) -> int:
        cur.execute("SELECT value FROM stageguard_meta WHERE key = 'revision'"
                    + (" FOR UPDATE" if lock else ""))
        return int(cur.fetchone()[0])

    def signature(self) -> object:
        """The revision: one indexed read per poll."""
        return self.revision()

    def read_index(self) -> Index:
        with self._transaction() as cur:
            revision = self._revision(cur)
            entries = self._entries(cur)
        projects: dict[str, dict[str, StageEntry]] = {}
        for (project, stage), entry in entries.items():
            projects.setdefault(project, {})[stage] = entry
        return Index(revision=revision, projects=projects)

    def stage_entry(self, project: str, stage: str) -> StageEntry | None:
        """One stage's entry: two indexed reads, whatever the registry's size."""
        with self._transaction() as cur:
            return self._entries(cur, (project, stage)).get((project, stage))

    @staticmethod
    def _entries(cur: Any, only: tuple[str, str] | None = None
                 ) -> dict[tuple[str, str], StageEntry]:
        """Stage entries with their versions: every stage's, or `only` this one's."""
        where, params = (" WHERE project = %s AND stage = %s", only) if only else ("", ())
        cur.execute("SELECT project, stage, type, paused, active, candidate FROM "
                    "stageguard_stages" + where, params)
        entries = {(project, stage): StageEntry(
            type=StageType(kind), paused=paused, active=active,
            candidate=None if candidate is None else Candidate.model_validate(candidate))
            for project, stage, kind, paused, active, candidate in cur.fetchall()}
        cur.execute("SELECT project, stage, version, digest, created_at FROM "
                    "stageguard_versions" + where + " ORDER BY project, stage, version",
                    params)
        for project, stage, version, digest, created in cur.fetchall():
            entries[project, stage].versions.append(VersionEntry(
                version=version, digest=digest, file=_file(project, stage, version),
                created_at=created))
        return entries

    def events_since(self, revision: int) -> list[Event] | None:
        """Every event is kept: never None."""
        with self._transaction() as cur:
            cur.execute("SELECT revision, kind, project, stage, version, at, note FROM "
                        "stageguard_events WHERE revision > %s ORDER BY revision, seq",
                        (revision,))
            return [Event(revision=r, kind=k, project=p, stage=s, version=v, at=a, note=n)
                    for r, k, p, s, v, a, n in cur.fetchall()]

    def describe(self, entry: VersionEntry) -> str:
        project, stage, version = _unfile(entry)
        return f"{self.where} {project}/{stage} v{version}"

    def read_bytes(self, entry: VersionEntry) -> bytes:
        project, stage, version = _unfile(entry)
        with self._transaction() as cur:
            cur.execute("SELECT artifact FROM stageguard_versions WHERE project = %s AND "
                        "stage = %s AND version = %s", (project, stage, version))
            row = cur.fetchone()
        if row is None:
            raise VersionNotFound(f"no version {version} of {project}/{stage} at {self.where}")
        return bytes(row[0])

    def load(self, project: str, stage: str, version: int | None = None) -> Artifact:
        chosen = choose_version(self.stage_entry(project, stage), project, stage, version,
                                self.where)
        return self.load_entry(project, stage, chosen)

    def load_entry(self, project: str, stage: str, entry: VersionEntry) -> Artifact:
        """The version a row holds, refused unless it is exactly what its entry says (a
        row edited to another version's content must not decide in its place)."""
        where = self.describe(entry)
        return check_entry(parse_artifact(self.read_bytes(entry), where), project, stage,
                           entry, where)

    def verify(self) -> list[str]:
        return verify_versions(self.read_index(), self.load_entry)

    # -- writing

    def _commit(self, cur: Any, changes: list[Change]) -> int:
        """One revision with its events, and the notification (sent at commit)."""
        cur.execute("UPDATE stageguard_meta SET value = value + 1 WHERE key = 'revision' "
                    "RETURNING value")
        revision = int(cur.fetchone()[0])
        at = _now()
        for seq, (kind, project, stage, version, note) in enumerate(changes):
            cur.execute("INSERT INTO stageguard_events (revision, seq, kind, project, stage, "
                        "version, at, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (revision, seq, kind, project, stage, version, at, note))
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(revision)))
        return revision

    def _expect(self, cur: Any, expected: int | None) -> None:
        current = self._revision(cur, lock=True)  # serialises every commit
        if expected is not None and current != expected:
            raise RevisionConflict(f"{self.where} is at revision {current}, not {expected}: "
                                   "it changed since it was read; nothing was written")

    def set_paused(self, project: str, stage: str, paused: bool, *,
                   expected_revision: int | None = None) -> StageEntry:
        with self._transaction() as cur:
            self._expect(cur, expected_revision)
            cur.execute("SELECT paused FROM stageguard_stages WHERE project = %s AND "
                        "stage = %s FOR UPDATE", (project, stage))
            row = cur.fetchone()
            if row is None:
                raise VersionNotFound(f"no stage {stage!r} in project {project!r} at "
                                      f"{self.where}")
            if row[0] != paused:
                cur.execute("UPDATE stageguard_stages SET paused = %s WHERE project = %s AND "
                            "stage = %s", (paused, project, stage))
                self._commit(cur, [("paused" if paused else "resumed", project, stage, None,
                                    None)])
        entry = self.stage_entry(project, stage)
        assert entry is not None
        return entry

    def set_serving(self, project: str, stage: str, change: ServingChange, *,
                    expected_revision: int | None = None) -> StageEntry:
        """As the directory store's: one event, in one transaction."""
        with self._transaction() as cur:
            self._expect(cur, expected_revision)
            cur.execute("SELECT 1 FROM stageguard_stages WHERE project = %s AND stage = %s "
                        "FOR UPDATE", (project, stage))
            entry = self._entries(cur, (project, stage)).get((project, stage))
            if entry is None:
                raise VersionNotFound(f"no stage {stage!r} in project {project!r} at "
                                      f"{self.where}")
            event = apply_serving(entry, change, project, stage)
            if event is not None:
                cur.execute("UPDATE stageguard_stages SET active = %s, candidate = %s WHERE "
                            "project = %s AND stage = %s",
                            (entry.active, None if entry.candidate is None else
                             self._jsonb(entry.candidate.model_dump()),
                             project, stage))
                self._commit(cur, [event])
        return entry

    def write_decisions(self, events: Sequence[dict[str, Any]],
                        lines: Sequence[bytes] | None = None) -> None:
        """Decision-log events into `stageguard_decisions` (a retried batch inserts nothing
        twice: the decision id is the key). `lines`: the events as JSON text already."""
        texts = [line.decode("utf-8") for line in lines] if lines is not None else \
            [json.dumps(e, allow_nan=False) for e in events]
        with self._transaction() as cur:
            cur.executemany(
                "INSERT INTO stageguard_decisions VALUES (%s, %s, %s, %s, %s, %s, "
                "%s::jsonb) ON CONFLICT (decision_id) DO NOTHING",
                [(e["decision_id"], e["at"], e["project"], e["stage"], e["version"],
                  e["status"], text) for e, text in zip(events, texts, strict=True)])

    def read_decisions(self, project: str | None = None, stage: str | None = None
                       ) -> list[dict[str, Any]]:
        """Logged events, oldest first (of one stage when named)."""
        where: str = ""
        params: tuple[str, ...] = ()
        if project is not None and stage is not None:
            where, params = " WHERE project = %s AND stage = %s", (project, stage)
        with self._transaction() as cur:
            cur.execute("SELECT event FROM stageguard_decisions" + where +
                        " ORDER BY at, decision_id", params)
            return [row[0] for row in cur.fetchall()]

    def publish(self, artifacts: Sequence[ArtifactDocument | Artifact], *,
                reuse_any_version: bool = False, create_only: bool = False,
                paused: bool | None = None, activate: bool = True,
                expected_revision: int | None = None) -> list[Published]:
        """As the directory store's: each artifact the next version of its stage unless its
        digest is the latest's (any earlier one's with `reuse_any_version`); all or nothing,
        in one transaction."""
        results: list[Published] = []
        with self._transaction() as cur:
            self._expect(cur, expected_revision)
            for item in artifacts:
                doc = (item if isinstance(item, ArtifactDocument)
                       else ArtifactDocument.from_artifact(item))
                cur.execute("SELECT type FROM stageguard_stages WHERE project = %s AND "
                            "stage = %s FOR UPDATE", (doc.project, doc.stage))
                exists = cur.fetchone() is not None
                if exists and create_only:
                    raise StageExists(f"stage {doc.stage!r} already exists in project "
                                      f"{doc.project!r}")
                if not exists:
                    cur.execute("INSERT INTO stageguard_stages VALUES (%s, %s, %s, %s)",
                                (doc.project, doc.stage, doc.stage_type.value, bool(paused)))
                cur.execute("SELECT version, digest FROM stageguard_versions WHERE "
                            "project = %s AND stage = %s ORDER BY version",
                            (doc.project, doc.stage))
                versions = cur.fetchall()
                candidates = versions if reuse_any_version else versions[-1:]
                same = [v for v, digest in candidates if digest == doc.digest]
                if same:
                    results.append(Published(doc.project, doc.stage, same[0], False))
                    continue
                number = versions[-1][0] + 1 if versions else 1
                raw = doc.to_bytes(number)
                artifact = parse_artifact(raw, f"{doc.project}/{doc.stage} v{number}")
                # Not activated, the version that served goes on serving: read it (before
                # the insert). A publish that activates needs no read.
                active = None if activate else keep_serving(
                    self._entries(cur, (doc.project, doc.stage))[doc.project, doc.stage], False)
                cur.execute("INSERT INTO stageguard_versions VALUES "
                            "(%s, %s, %s, %s, %s, %s, %s, %s)",
                            (doc.project, doc.stage, number, doc.digest, raw,
                             artifact.compiler.version, self.publisher, _now()))
                cur.execute("UPDATE stageguard_stages SET type = %s, active = %s WHERE "
                            "project = %s AND stage = %s",
                            (doc.stage_type.value, active, doc.project, doc.stage))
                results.append(Published(doc.project, doc.stage, number, True))
            created = [r for r in results if r.created]
            if created or (create_only and results):
                self._commit(cur, [("published", r.project, r.stage, r.version,
                                    None if activate else "not activated") for r in created])
        return results


class PostgresDecisionSink:
    """A decision-log sink into the store's own table, `stageguard_decisions`, on a
    connection of its own (runtime/decision_log.py retries a failed batch)."""

    def __init__(self, url: str) -> None:
        self.store = PostgresRegistry(url)
        self.name = f"postgresql:{self.store.where}"

    def write(self, events: Sequence[dict[str, Any]],
              lines: Sequence[bytes] | None = None) -> None:
        self.store.write_decisions(events, lines)

    def close(self) -> None:
        self.store.close()
