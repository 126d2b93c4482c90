"""Diff reports for people and tools: terminal text, Markdown (jinja2 templates kept as
package files, for pull-request comments) and JSON."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import cache
from typing import Any, cast

import jinja2

from stageguard.compiler.ci_formats import annotation
from stageguard.compiler.diff import DiffReport
from stageguard.compiler.traffic import StageTraffic

# Regions listed per stage in terminal text; JSON and Markdown list them all unless capped.
SHOWN = 12
# GitHub refuses a comment body over 65,536 characters; leave room for a marker line.
COMMENT_LIMIT = 65_000


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stageguard.compiler", "templates"),
        autoescape=False,  # Markdown, not HTML; table cells are escaped by `cell`
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


def cap(report: DiffReport, max_regions: int | None) -> DiffReport:
    """At most `max_regions` regions and webhook regions per stage (those reachable without
    failures first, as the diff orders them); each stage counts what it left out."""
    if max_regions is None:
        return report
    # Traffic counts are indexed by region; the first `max_regions` keep their indices.
    return replace(report, stages=tuple(replace(
        s, regions=s.regions[:max_regions], hooks=s.hooks[:max_regions],
        regions_left_out=s.regions_left_out + max(0, len(s.regions) - max_regions),
        hooks_left_out=s.hooks_left_out + max(0, len(s.hooks) - max_regions))
        for s in report.stages))


def traffic_text(t: StageTraffic, i: int) -> str:
    """One region's share of the logged decisions: "1,204 of 66,880 logged (1.80%)"."""
    return f"{t.regions[i]:,} of {t.judged:,} logged decisions ({t.share(t.regions[i]):.2%})"


def traffic_summary(t: StageTraffic) -> str:
    span = f" from {t.first[:10]} to {t.last[:10]}" if t.first and t.last else ""
    apart = [f"{n:,} {why}" for n, why in ((t.lacking, "lack a metric one version needs"),
                                           (t.outside, "lie outside the analysed domain"),
                                           (t.undecided, "were paused or skipped"),
                                           (t.unreadable, "are unreadable")) if n]
    return (f"{t.events:,} logged decisions{span}; {sum(t.regions):,} of {t.judged:,} judged "
            f"lie in changed regions ({t.share(sum(t.regions)):.2%})"
            + (f"; not judged: {', '.join(apart)}" if apart else ""))


def _markdown(report: DiffReport, max_regions: int | None, full_report: str | None) -> str:
    changed = [s for s in report.stages if s.behaviour_changed]
    return _environment().get_template("diff.md.j2").render(
        report=report, changed=changed, traffic_text=traffic_text,
        traffic_summary=traffic_summary, max_regions=max_regions, full_report=full_report)


def markdown(report: DiffReport, max_regions: int | None = None,
             max_chars: int | None = None, full_report: str | None = None) -> str:
    """The pull-request comment. With `max_chars`, regions are capped further (down to a
    summary of counts) until the body fits; `full_report` says where the uncapped report is
    (a CI artifact's name or url)."""
    body = _markdown(cap(report, max_regions), max_regions, full_report)
    if max_chars is None or len(body) <= max_chars:
        return body
    # The most regions per stage that fit: fewer regions never make the body longer.
    most = max((len(s.regions) + len(s.hooks) for s in report.stages), default=0)
    lo, hi = -1, min(max_regions if max_regions is not None else most, most)
    best = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = _markdown(cap(report, mid), mid, full_report)
        if len(candidate) <= max_chars:
            lo, best = mid, candidate
        else:
            hi = mid - 1
    if best is not None:
        return best
    body = _markdown(cap(report, 0), 0, full_report)
    # Even without regions it is too long (thousands of structural changes): cut at a line.
    note = ("\n\n*… the report is longer than a comment can be; "
            + (f"the full report is {full_report}.*\n" if full_report
               else "run `stageguard diff --format markdown` for all of it.*\n"))
    cut = body[:max_chars - len(note)]
    return cut[:cut.rfind("\n")] + note


def as_json(report: DiffReport) -> str:
    """Every region: JSON is for tools, and is never capped. Indented, except that each box
    is written on one line: a large change holds tens of thousands of boxes, which the
    indenting encoder (pure Python) writes 8 times slower and 3 times longer."""
    data = report.to_data()
    boxes: list[str] = []
    compact = _COMPACT.encode
    for stage in cast(list[dict[str, Any]], data["stages"]):
        for region in (*stage["regions"], *stage["webhooks"]):
            if "boxes" in region:
                held = []
                for box in region["boxes"]:
                    held.append(_HOLD + str(len(boxes)))
                    boxes.append(compact(box))
                region["boxes"] = held
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if text.count('"\\u0000') != len(boxes):  # a string of the report itself is like a hold
        return json.dumps(report.to_data(), indent=2, ensure_ascii=False)
    return _HELD.sub(lambda m: boxes[int(m[1])], text)


_COMPACT = json.JSONEncoder(ensure_ascii=False)
# Where a box goes in the indented text: a string that JSON writes as "\u0000<n>".
_HOLD = "\x00"
_HELD = re.compile(r'"\\u0000(\d+)"')


def text(report: DiffReport, max_regions: int | None = None) -> str:
    shown = SHOWN if max_regions is None else max_regions
    out = [f"diff {report.old_label} → {report.new_label}"]
    for s in report.stages:
        if s.status == "unchanged":
            continue
        versions = f" (v{s.old.version} → v{s.new.version})" \
            if s.old and s.new and s.old.version != s.new.version else ""
        out.append(f"\nstage {s.project}/{s.name}: {s.status}{versions}")
        for c in s.changes:
            out.append(f"  ~ {c.message}{f' ({c.direction})' if c.direction else ''}")
        plain = [r for r in s.regions if not r.failures]
        failing = [r for r in s.regions if r.failures]
        if plain:
            out.append(f"  payloads that change fate ({len(plain)} region"
                       f"{'s' if len(plain) != 1 else ''}):")
        for n, r in enumerate(plain[:shown], 1):
            assert s.space is not None  # a stage with regions was compared
            out.append(f"   {n}. where {r.where(s.space, 1)[0]}"
                       + (f" (+{len(r.boxes) - 1} more boxes)" if len(r.boxes) > 1 else ""))
            if s.traffic is not None:
                out.append(f"      traffic: {traffic_text(s.traffic, s.regions.index(r))}")
            out.append(f"      witness: {r.witness.text()}")
            out.append(f"      before:  {r.before.text()}")
            out.append(f"      after:   {r.after.text()}")
        if len(plain) > shown:
            out.append(f"   … {len(plain) - shown} more (see --format json)")
        if failing:
            first = failing[0]
            out.append(f"  and {len(failing)} region{'s' if len(failing) != 1 else ''} that "
                       "change fate only when a metric fails, e.g.")
            out.append(f"      witness: {first.witness.text()}")
            out.append(f"      before:  {first.before.text()}")
            out.append(f"      after:   {first.after.text()}")
            if s.traffic is not None:
                n = sum(s.traffic.regions[s.regions.index(r)] for r in failing)
                out.append(f"      traffic, all {len(failing)}: {n:,} of "
                           f"{s.traffic.judged:,} logged decisions "
                           f"({s.traffic.share(n):.2%})")
        if s.hooks:
            out.append(f"  webhooks that start or stop being posted ({len(s.hooks)} region"
                       f"{'s' if len(s.hooks) != 1 else ''}):")
        for h in s.hooks[:shown]:
            out.append(f"   - {h.url}: {h.text()}")
            assert s.space is not None
            out.append(f"      where {h.where(s.space, 1)[0]}")
            out.append(f"      witness: {h.witness.text()}")
        if len(s.hooks) > shown:
            out.append(f"   … {len(s.hooks) - shown} more (see --format json)")
        if s.traffic is not None:
            out.append(f"  traffic: {traffic_summary(s.traffic)}")
        if s.old and s.new and not s.behaviour_changed:
            out.append("  no payload changes fate (proved for every payload)")
    if report.incomplete:
        out.append(f"\nnot compared (the analysis stopped at its time limit): "
                   f"{', '.join(report.incomplete)}")
    if len(out) == 1:
        out.append("no changes")
    verdict = "behaviour changes" if report.behaviour_changed else \
        "incomplete: nothing is proved for the stages not compared" if report.incomplete \
        else "no behavioural change"
    out.append(f"\n{verdict}")
    return "\n".join(out) + "\n"


def diff_annotations(report: DiffReport) -> str:
    """One GitHub workflow annotation per stage whose behaviour changes (a warning: the
    reviewer decides), with its first region's witness; nothing when nothing changes."""
    lines = []
    for s in report.stages:
        if not s.behaviour_changed:
            continue
        body = [f"stage {s.project}/{s.name}: {s.status}"]
        body += [f"~ {c.message}" for c in s.changes[:SHOWN]]
        if s.regions:
            r = s.regions[0]
            body.append(f"{len(s.regions):,} region{'s' if len(s.regions) != 1 else ''} change "
                        f"fate, e.g. {r.witness.text()}: {r.before.text()} → {r.after.text()}")
        if s.hooks:
            body.append(f"{len(s.hooks):,} webhook region{'s' if len(s.hooks) != 1 else ''}")
        lines.append(annotation("warning", "\n".join(body),
                                f"stageguard diff: {s.project}/{s.name} {s.status}"))
    return "".join(line + "\n" for line in lines)
