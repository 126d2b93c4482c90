"""Diff reports for people and tools: terminal text, Markdown (jinja2 templates kept as
package files, for pull-request comments) and JSON."""

from __future__ import annotations

import json
from functools import cache

import jinja2

from stageguard.compiler.diff import DiffReport
from stageguard.compiler.traffic import StageTraffic

# Regions listed per stage in terminal text; JSON and Markdown list them all.
SHOWN = 12


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stageguard.compiler", "templates"),
        autoescape=False,  # Markdown, not HTML; table cells are escaped by `cell`
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


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


def markdown(report: DiffReport) -> str:
    changed = [s for s in report.stages if s.behaviour_changed]
    return _environment().get_template("diff.md.j2").render(
        report=report, changed=changed, traffic_text=traffic_text,
        traffic_summary=traffic_summary)


def as_json(report: DiffReport) -> str:
    return json.dumps(report.to_data(), indent=2, ensure_ascii=False)


def text(report: DiffReport) -> str:
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
        for n, r in enumerate(plain[:SHOWN], 1):
            out.append(f"   {n}. where {r.descriptions[0]}"
                       + (f" (+{len(r.descriptions) - 1} more boxes)" if len(r.descriptions) > 1
                          else ""))
            if s.traffic is not None:
                out.append(f"      traffic: {traffic_text(s.traffic, s.regions.index(r))}")
            out.append(f"      witness: {r.witness.text()}")
            out.append(f"      before:  {r.before.text()}")
            out.append(f"      after:   {r.after.text()}")
        if len(plain) > SHOWN:
            out.append(f"   … {len(plain) - SHOWN} more (see --format json)")
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
        for h in s.hooks[:SHOWN]:
            out.append(f"   - {h.url}: {h.text()}")
            out.append(f"      where {h.descriptions[0]}")
            out.append(f"      witness: {h.witness.text()}")
        if len(s.hooks) > SHOWN:
            out.append(f"   … {len(s.hooks) - SHOWN} more (see --format json)")
        if s.traffic is not None:
            out.append(f"  traffic: {traffic_summary(s.traffic)}")
        if s.old and s.new and not s.behaviour_changed:
            out.append("  no payload changes fate (proved for every payload)")
    if len(out) == 1:
        out.append("no changes")
    verdict = "behaviour changes" if report.behaviour_changed else "no behavioural change"
    out.append(f"\n{verdict}")
    return "\n".join(out) + "\n"
