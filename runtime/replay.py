"""Replay: logged decisions decided again by another version of their stage, with the
metric values the log holds. No scorer is called, so a replay is exact: an event that lacks a
metric the other version needs (the logged decision never computed it, or a rule redacted
it) is counted apart, never guessed.

The report is a flip table (from status -> to status, how many, their share of the events
decided again, example decision ids), the events whose winning ruleset changed under an
unchanged status, and what could not be replayed, by reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stageguard.runtime.decision_log import decided_nothing, metric_values
from stageguard.runtime.evaluate import outcomes_status
from stageguard.runtime.model import Status
from stageguard.runtime.served import LoadedStage

EXAMPLES = 3


class Unavailable(Exception):
    """The other version needs a metric the event does not hold."""


def _unavailable(name: str) -> object:
    raise Unavailable(name)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One event decided again: its decision as logged and as the other version makes it."""

    decision_id: str
    before: tuple[str, str | None]  # (status, winning ruleset)
    after: tuple[str, str | None]
    values: Mapping[str, object]

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass
class Flip:
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class ReplayReport:
    project: str
    stage: str
    against: str  # what decided again: "v3", "policies/guard.sg"
    events: int = 0  # events of this stage read
    decided: int = 0  # events decided again
    other_stages: int = 0  # events of other stages, skipped
    undecided: int = 0  # paused, skipped or refused decisions: nothing to decide again
    unreadable: int = 0  # events this stageguard cannot read (another schema, damage)
    lacking: dict[str, int] = field(default_factory=dict)  # metric -> events that lacked it
    flips: dict[tuple[str, str], Flip] = field(default_factory=dict)  # status changes
    moved: Flip = field(default_factory=Flip)  # same status, another winning ruleset
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def flipped(self) -> int:
        return sum(f.count for f in self.flips.values())

    @property
    def flip_rate(self) -> float:
        """The share of the events decided again whose status changes (0 with none)."""
        return self.flipped / self.decided if self.decided else 0.0

    @property
    def lacking_total(self) -> int:
        return sum(self.lacking.values())

    def to_data(self) -> dict[str, Any]:
        return {
            "project": self.project, "stage": self.stage, "against": self.against,
            "events": self.events, "decided": self.decided, "flipped": self.flipped,
            "flip_rate": self.flip_rate,
            "flips": [{"from": a, "to": b, "count": f.count,
                       "share": f.count / self.decided if self.decided else 0.0,
                       "examples": f.examples} for (a, b), f in sorted(self.flips.items())],
            "ruleset_changed": {"count": self.moved.count, "examples": self.moved.examples},
            "not_replayed": {"other_stages": self.other_stages, "undecided": self.undecided,
                             "unreadable": self.unreadable,
                             "lacking_metrics": dict(sorted(self.lacking.items()))},
        }

    def text(self) -> str:
        lines = [f"{self.project}/{self.stage}: {self.decided:,} of {self.events:,} logged "
                 f"decisions replayed against {self.against}; {self.flipped:,} change "
                 f"status ({self.flip_rate:.2%})"]
        for (a, b), f in sorted(self.flips.items(), key=lambda kv: -kv[1].count):
            share = f.count / self.decided if self.decided else 0.0
            lines.append(f"  {a:>13} -> {b:<13} {f.count:>9,}  {share:7.2%}  e.g. "
                         f"{', '.join(f.examples)}")
        if self.moved.count:
            lines.append(f"  same status, another winning ruleset: {self.moved.count:,} "
                         f"(e.g. {', '.join(self.moved.examples)})")
        lines.extend(self._apart())
        return "\n".join(lines)

    def markdown(self) -> str:
        out = [f"### Replay of `{self.project}/{self.stage}` against `{self.against}`", "",
               f"{self.decided:,} of {self.events:,} logged decisions replayed; "
               f"**{self.flipped:,} change status ({self.flip_rate:.2%})**.", ""]
        if self.flips:
            out += ["| from | to | decisions | share | examples |", "|---|---|---:|---:|---|"]
            for (a, b), f in sorted(self.flips.items(), key=lambda kv: -kv[1].count):
                share = f.count / self.decided if self.decided else 0.0
                out.append(f"| {a} | {b} | {f.count:,} | {share:.2%} | "
                           f"{', '.join(f'`{x}`' for x in f.examples)} |")
            out.append("")
        if self.moved.count:
            out += [f"Same status, another winning ruleset: {self.moved.count:,}.", ""]
        out += [f"- {line.strip()}" for line in self._apart()]
        return "\n".join(out).rstrip() + "\n"

    def _apart(self) -> list[str]:
        lines = []
        if self.lacking:
            named = ", ".join(f"{m} ({n:,})" for m, n in sorted(self.lacking.items()))
            lines.append(f"  not replayed, a metric the new version needs was not logged: "
                         f"{self.lacking_total:,} ({named})")
        for count, why in ((self.undecided, "paused, skipped or refused when logged"),
                           (self.unreadable, "unreadable events"),
                           (self.other_stages, "events of other stages")):
            if count:
                lines.append(f"  not replayed, {why}: {count:,}")
        return lines


def replay(events: Iterable[Mapping[str, Any] | None], project: str, stage: str,
           against: LoadedStage, label: str, keep_outcomes: bool = True) -> ReplayReport:
    """Decide each logged event of `project/stage` again with `against`."""
    report = ReplayReport(project, stage, label)
    names = [rs.name for rs in against.rulesets]
    for event in events:
        if event is None:  # a line of the log that is not an event
            report.unreadable += 1
            continue
        if event.get("project") != project or event.get("stage") != stage:
            report.other_stages += 1
            continue
        report.events += 1
        before_status = event.get("status")
        if decided_nothing(event):  # nothing to decide again
            report.undecided += 1
            continue
        values = metric_values(event)
        if values is None or not isinstance(before_status, str):
            report.unreadable += 1
            continue
        try:
            found = against.decide_values(dict(values), _unavailable)
        except Unavailable as missing:
            name = str(missing)
            report.lacking[name] = report.lacking.get(name, 0) + 1
            continue
        status = Status.TRIGGERED if Status.TRIGGERED in found else outcomes_status(found)
        winner = names[found.index(Status.TRIGGERED)] if status is Status.TRIGGERED else None
        report.decided += 1
        decision_id = str(event.get("decision_id"))
        outcome = Outcome(decision_id, (before_status, event.get("ruleset")),
                          (status.value, winner), values)
        if keep_outcomes:
            report.outcomes.append(outcome)
        if before_status != status.value:
            flip = report.flips.setdefault((before_status, status.value), Flip())
        elif outcome.changed:
            flip = report.moved
        else:
            continue
        flip.count += 1
        if len(flip.examples) < EXAMPLES:
            flip.examples.append(decision_id)
    return report
