"""`stageguard pr-comment`: one sticky pull-request comment, edited in place on every push.

The comment is found by a hidden marker line (`<!-- stageguard:NAME -->`) among the pull
request's comments; if there is none it is created. GitHub's REST API, over the standard
library's HTTP client (as webhooks are posted), so CI needs no extra package:

    GET   /repos/{repo}/issues/{number}/comments?per_page=100&page=K
    PATCH /repos/{repo}/issues/comments/{id}
    POST  /repos/{repo}/issues/{number}/comments

Settings come from the environment GitHub Actions provides (GITHUB_TOKEN or GH_TOKEN,
GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_EVENT_PATH), each overridable by a flag.
Exit codes: 0 posted or edited; 1 GitHub refused or could not be reached; 2 a usage error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# GitHub's limit for a comment body, in characters.
BODY_LIMIT = 65_536
PAGE = 100
MAX_PAGES = 50  # 5,000 comments: beyond that, a new comment rather than an endless search


class GitHubError(Exception):
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pr-comment", help="post a report as one pull-request comment, edited "
                       "in place on later runs (GitHub)")
    p.add_argument("--body-file", required=True, metavar="FILE",
                   help="the comment's Markdown (e.g. diff --format markdown); - for stdin")
    p.add_argument("--marker", default="diff", metavar="NAME",
                   help="which sticky comment this is (default: diff)")
    p.add_argument("--repo", metavar="OWNER/NAME", help="default: $GITHUB_REPOSITORY")
    p.add_argument("--pr", type=int, metavar="N",
                   help="the pull request (default: from $GITHUB_EVENT_PATH)")
    p.add_argument("--api-url", metavar="URL",
                   help="default: $GITHUB_API_URL, else https://api.github.com")


def marker_line(name: str) -> str:
    return f"<!-- stageguard:{name} -->"


class GitHub:
    """The few REST calls the sticky comment needs, on one keep-alive connection."""

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GitHubError(f"the API url `{api_url}` is not an http(s) url")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else \
            http.client.HTTPConnection
        self._conn = cls(parts.hostname, parts.port, timeout=timeout)
        self._prefix = parts.path.rstrip("/")
        self._token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}",
                   "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "stageguard"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            self._conn.request(method, self._prefix + path, data, headers)
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise GitHubError(f"{method} {path}: cannot reach GitHub ({exc})") from None
        if resp.status >= 300:
            try:
                why = json.loads(raw).get("message", "")
            except (ValueError, AttributeError):
                why = raw[:200].decode("utf-8", "replace")
            raise GitHubError(f"{method} {path}: GitHub answered {resp.status} {why}".rstrip())
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise GitHubError(f"{method} {path}: GitHub's answer is not JSON") from None

    def close(self) -> None:
        self._conn.close()


def sticky(gh: GitHub, repo: str, pr: int, name: str, text: str) -> tuple[str, int]:
    """Create or edit the marked comment; ("created" | "edited", its id)."""
    marker = marker_line(name)
    body = f"{marker}\n{text}"
    if len(body) > BODY_LIMIT:
        raise GitHubError(f"the comment is {len(body):,} characters; GitHub takes at most "
                          f"{BODY_LIMIT:,} (diff caps its Markdown with --max-chars)")
    for page in range(1, MAX_PAGES + 1):
        comments = gh.call("GET", f"/repos/{repo}/issues/{pr}/comments?per_page={PAGE}"
                           f"&page={page}")
        if not isinstance(comments, list):
            raise GitHubError("GitHub's list of comments is not a list")
        for c in comments:
            if isinstance(c, dict) and str(c.get("body", "")).startswith(marker):
                gh.call("PATCH", f"/repos/{repo}/issues/comments/{c['id']}", {"body": body})
                return "edited", int(c["id"])
        if len(comments) < PAGE:
            break
    made = gh.call("POST", f"/repos/{repo}/issues/{pr}/comments", {"body": body})
    return "created", int(made["id"]) if isinstance(made, dict) and "id" in made else 0


def _pr_from_event() -> int | None:
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    number = (event.get("pull_request") or {}).get("number") or event.get("number")
    return number if isinstance(number, int) else None


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    repo = args.repo or os.environ.get("GITHUB_REPOSITORY")
    pr = args.pr or _pr_from_event()
    api = args.api_url or os.environ.get("GITHUB_API_URL") or "https://api.github.com"
    missing = [what for what, have in (("a token (GITHUB_TOKEN or GH_TOKEN)", token),
                                       ("--repo or GITHUB_REPOSITORY", repo),
                                       ("--pr or a pull_request event", pr)) if not have]
    if missing or not (token and repo and pr):
        print(f"error: pr-comment needs {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if args.body_file == "-" else \
            Path(args.body_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.body_file}: {exc}", file=sys.stderr)
        return 2
    try:
        gh = GitHub(api, token)
    except GitHubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        done, cid = sticky(gh, repo, pr, args.marker, text)
    except GitHubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        gh.close()
    print(f"{done} comment {cid} on {repo}#{pr}")
    return 0
