"""The editor features over an Analysis, by source offset: hover, completion, definition and
references, symbols, rename, code actions. Each returns plain data (text, spans, edits); the
server turns it into protocol types."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import Diagnostic, Span, span_at
from stageguard.compiler.policytest import SUFFIX as TEST_SUFFIX
from stageguard.compiler.policytest import Coverage, suggest
from stageguard.compiler.sources import is_rulesets_file
from stageguard.compiler.unparse import SPELLING, rule_source
from stageguard.lsp.analysis import Analysis, Symbol
from stageguard.lsp.commands import test_stages
from stageguard.runtime.catalog import canonical_name
from stageguard.runtime.model import MetricSpec, MetricType, Status
from stageguard.runtime.rule_types import valid_operators

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
KEYWORDS = {
    "top": ["project", "metric", "stage"],
    "stage": ["type", "description", "fail", "id", "ruleset"],
    "metric": ["type", "description", "min", "max", "labels", "timeout", "fail", "scorer",
               "field"],
    "ruleset": ["when", "description", "override", "passthrough", "notify"],
    "override": ["choice"],
}
STAGE_TYPES = ["central", "local"]
METRIC_TYPES = [t.value for t in MetricType]
FAIL_MODES = ["open", "closed"]


# ---- describing things --------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "unbounded" if x is None else f"{x:g}"


def describe_metric(spec: MetricSpec | None, name: str, decl: Symbol | None) -> str:
    if spec is None:
        return f"**{name}**: not in the metric catalog (declare it with `metric {name} {{ … }}`)"
    kind = spec.type.value
    shape = ""
    if spec.type in (MetricType.SCORE, MetricType.NUMBER):
        shape = f" in [{_num(spec.minimum)}, {_num(spec.maximum)}]"
    lines = [f"**{spec.name}** · {kind}{shape}"]
    if spec.description:
        lines.append(spec.description)
    if spec.labels:
        lines.append("labels: " + ", ".join(f"`{label}`" for label in spec.labels))
    operators = ", ".join(f"`{SPELLING[o]}`" for o in valid_operators(spec.type))
    lines.append(f"operators: {operators}")
    budget = [f"timeout {spec.timeout:g}s" if spec.timeout is not None else "",
              f"fails {spec.fail_mode.value}" if spec.fail_mode is not None else "",
              f"scored by `{spec.scorer.url}`" if spec.scorer is not None else ""]
    if any(budget):
        lines.append("budget: " + ", ".join(b for b in budget if b))
    if decl is not None:
        lines.append(f"declared at {_short(decl.span)}")
    elif spec.builtin:
        lines.append("built-in metric")
    return "\n\n".join(lines)


def _short(span: Span) -> str:
    return f"{span.file.rsplit('/', 1)[-1]}:{span.line}"


def threshold_meaning(rule: ast.Rule, spec: MetricSpec | None) -> str | None:
    """What a numeric threshold means over the metric's declared range."""
    if not isinstance(rule.target, ast.Num) or spec is None or spec.type not in (
            MetricType.SCORE, MetricType.NUMBER):
        return None
    t = rule.target.value
    lo, hi = spec.minimum, spec.maximum
    text = rule_source(rule.metric.value, rule.operator, t)
    region = {">": f"above {t:g}", ">=": f"{t:g} or above", "<": f"below {t:g}",
              "<=": f"{t:g} or below", "==": f"exactly {t:g}", "!=": f"anything but {t:g}"}
    what = region.get(SPELLING[rule.operator], "")
    out = f"`{text}` holds for values {what}"
    if lo is not None and hi is not None and hi > lo and SPELLING[rule.operator] in (
            ">", ">=", "<", "<="):
        share = (hi - t) / (hi - lo) if SPELLING[rule.operator] in (">", ">=") else \
            (t - lo) / (hi - lo)
        share = max(0.0, min(1.0, share))
        out += f": {share:.0%} of the declared range [{lo:g}, {hi:g}]"
        if t < lo or t > hi:
            out += " (the threshold lies outside the range)"
    elif lo is not None or hi is not None:
        out += f" (declared range [{_num(lo)}, {_num(hi)}])"
    out += "; a missing or failed metric makes the rule false"
    return out


def describe_ruleset(rs: ast.Ruleset, stage: ast.Stage | None) -> str:
    where = ""
    if stage is not None:
        rank = [r.name.value for r in stage.rulesets].index(rs.name.value) + 1
        where = f" · rank {rank} of {len(stage.rulesets)} in stage `{stage.name.value}`"
    action = "no action"
    notify = 0
    for item in rs.items:
        if isinstance(item, ast.Override):
            n = len(item.choices)
            action = f"override ({n} choice{'s' if n != 1 else ''})"
        elif isinstance(item, ast.Passthrough):
            action = "passthrough"
        elif isinstance(item, ast.Notify):
            notify += 1
    rules = "\n".join(f"when {rule_source(r.metric.value, r.operator, _target(r.target))}"
                      for r in rs.rules)
    extra = f" · notify {notify}" if notify else ""
    return (f"ruleset **{rs.name.value}**{where}\n\n→ {action}{extra}; triggers when every "
            f"rule holds\n\n```stageguard\n{rules}\n```")


def _target(t: ast.Target | None) -> float | str | tuple[str, ...] | None:
    if isinstance(t, ast.Num):
        return t.value
    if isinstance(t, ast.Str):
        return t.value
    if isinstance(t, ast.ListLit):
        return tuple(str(getattr(i, "value", "")) for i in t.items)
    return None


def describe_stage(stage: ast.Stage) -> str:
    kind, fail, description = "central", "open", None
    for item in stage.items:
        if isinstance(item, ast.TypeProp):
            kind = item.value.value
        elif isinstance(item, ast.FailProp):
            fail = item.value.value
        elif isinstance(item, ast.Description):
            description = item.text.value
    n = len(stage.rulesets)
    lines = [f"stage **{stage.name.value}** · {kind}, fail {fail} · {n} "
             f"ruleset{'s' if n != 1 else ''} (the first that triggers decides)"]
    if description:
        lines.append(description)
    return "\n\n".join(lines)


# ---- finding nodes ------------------------------------------------------------------------


def _walk(analysis: Analysis, file: str) -> Iterator[tuple[ast.Stage | None, object]]:
    for f in analysis.compilation.files:
        if f.path != file:
            continue
        for item in f.items:
            if isinstance(item, ast.Stage):
                yield None, item
                for rs in item.rulesets:
                    yield item, rs
                    for rule in rs.rules:
                        yield item, rule
            else:
                yield None, item


def _stage_of(analysis: Analysis, file: str, rs: ast.Ruleset) -> ast.Stage | None:
    for stage, node in _walk(analysis, file):
        if node is rs:
            return stage
    return None


def hover(analysis: Analysis, file: str, offset: int) -> tuple[str, Span] | None:
    catalog = analysis.index.catalog(file)
    for _, node in _walk(analysis, file):  # a threshold or label under the cursor
        if isinstance(node, ast.Rule) and node.target is not None and \
                node.target.span.start <= offset <= node.target.span.end:
            spec = catalog.get(canonical_name(node.metric.value))
            meaning = threshold_meaning(node, spec)
            if meaning:
                return meaning, node.target.span
    sym = analysis.index.at(file, offset)
    text: str | None = None
    if sym is not None:
        if sym.kind == "metric":
            decls = analysis.index.declarations("metric", sym.name)
            text = describe_metric(catalog.get(sym.name), sym.name,
                                   decls[0] if decls else None)
        elif sym.kind == "ruleset" and isinstance(sym.node, ast.Ruleset):
            text = describe_ruleset(sym.node, _stage_of(analysis, file, sym.node))
        elif sym.kind == "stage" and isinstance(sym.node, ast.Stage):
            text = describe_stage(sym.node)
        elif sym.kind == "project":
            text = f"project **{sym.name}**: its stages and metrics are named within it"
    found = _diagnostics_at(analysis, file, offset)
    if found:
        notes = "\n\n".join(f"**{d.code}** ({d.severity.value}): {d.message}"
                            + (f"\n\nhelp: {d.help}" if d.help else "") for d in found)
        text = f"{text}\n\n---\n\n{notes}" if text else notes
    if text is None:
        return None
    return text, sym.span if sym is not None else found[0].span


def _diagnostics_at(analysis: Analysis, file: str, offset: int) -> list[Diagnostic]:
    return [d for d in analysis.diagnostics().get(file, [])
            if d.span.start <= offset <= max(d.span.end, d.span.start + 1)]


# ---- completion ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completion:
    label: str
    kind: str          # "keyword", "metric", "operator", "label", "status", "value"
    detail: str = ""
    insert: str | None = None


_TOKEN = re.compile(r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"?|#[^\n]*|[{}]|'
                    r"[A-Za-z_][A-Za-z0-9_\-]*")


def block_at(text: str, offset: int) -> str:
    """Which block the offset is in: top, stage, metric, ruleset or override."""
    stack: list[str] = []
    last = ""
    for m in _TOKEN.finditer(text, 0, offset):
        tok = m.group()
        if tok == "{":
            stack.append(last if last in KEYWORDS else "?")
        elif tok == "}":
            if stack:
                stack.pop()
        elif tok in KEYWORDS:
            last = tok
    return stack[-1] if stack else "top"


def complete(analysis: Analysis | None, file: str, text: str, offset: int) -> list[Completion]:
    line_start = text.rfind("\n", 0, offset) + 1
    prefix = text[line_start:offset]
    catalog = analysis.index.catalog(file) if analysis else {}
    block = block_at(text, offset)
    if re.match(r"^\s*when\s+[A-Za-z_0-9\-]*$", prefix):
        return [Completion(name, "metric", _metric_detail(spec)) for name, spec in
                sorted(catalog.items())]
    m = re.match(r"^\s*when\s+([A-Za-z_][A-Za-z0-9_\-]*)\s+(\S*)$", prefix)
    if m:
        spec = catalog.get(m.group(1))
        if spec is None:
            return []
        return [Completion(SPELLING[o], "operator", f"for a {spec.type.value} metric")
                for o in valid_operators(spec.type)]
    m = re.match(r"^\s*when\s+([A-Za-z_][A-Za-z0-9_\-]*)\s+(==|!=|contains|any|all)\s+.*$",
                 prefix)
    if m:
        spec = catalog.get(m.group(1))
        if spec is None or not spec.labels:
            return []
        inside_quote = prefix.count('"') % 2 == 1
        return [Completion(label, "label", f"a label of {spec.name}",
                           label if inside_quote else f'"{label}"') for label in spec.labels]
    if re.search(r"\bnotify\s+\"[^\"]*\"\s+on\s+(?:[a-z_]+\s*,\s*)*[a-z_]*$", prefix):
        return [Completion(s.value, "status", "a decision status") for s in Status]
    if re.match(r"^\s*type\s+\w*$", prefix):
        values = STAGE_TYPES if block == "stage" else METRIC_TYPES if block == "metric" else []
        return [Completion(v, "value") for v in values]
    if re.match(r"^\s*fail\s+\w*$", prefix) and block == "stage":
        return [Completion(v, "value", "what a failed metric means") for v in FAIL_MODES]
    if re.match(r"^\s*[A-Za-z_]*$", prefix):
        if block == "top" and is_rulesets_file(file):
            return [Completion("ruleset", "keyword", "a rulesets file holds rulesets only")]
        return [Completion(k, "keyword") for k in KEYWORDS.get(block, [])]
    return []


def _metric_detail(spec: MetricSpec) -> str:
    if spec.type in (MetricType.SCORE, MetricType.NUMBER):
        return f"{spec.type.value} in [{_num(spec.minimum)}, {_num(spec.maximum)}]"
    return f"{spec.type.value} ({len(spec.labels or ())} labels)"


# ---- definition, references, rename -------------------------------------------------------


def definition(analysis: Analysis, file: str, offset: int) -> list[Span]:
    sym = analysis.index.at(file, offset)
    if sym is None:
        return []
    return [s.span for s in analysis.index.declarations(sym.kind, sym.name, sym.stage
                                                         if sym.kind == "ruleset" else None)]


def references(analysis: Analysis, file: str, offset: int,
               include_declaration: bool = True) -> list[Span]:
    sym = analysis.index.at(file, offset)
    if sym is None:
        return []
    stage = sym.stage if sym.kind == "ruleset" else None
    return [s.span for s in analysis.index.references(sym.kind, sym.name, stage)
            if include_declaration or not s.declaration]


class RenameError(ValueError):
    pass


def rename_target(analysis: Analysis, file: str, offset: int) -> Symbol:
    sym = analysis.index.at(file, offset)
    if sym is None or sym.kind not in ("metric", "ruleset", "stage"):
        raise RenameError("only a ruleset, a stage or a declared metric can be renamed")
    if sym.kind == "metric" and not analysis.index.declarations("metric", sym.name):
        raise RenameError(f"`{sym.name}` is a built-in metric: its name is the catalog's")
    return sym


def rename(analysis: Analysis, file: str, offset: int, new: str) -> list[Span]:
    """The spans to rewrite as `new`; RenameError says why not."""
    sym = rename_target(analysis, file, offset)
    if not NAME.match(new):
        raise RenameError(f"`{new}` is not a name (letters, digits, `_` and `-`, not first "
                          "a digit)")
    stage = sym.stage if sym.kind == "ruleset" else None
    if analysis.index.declarations(sym.kind, new, stage) or (
            sym.kind == "metric" and new in analysis.index.catalog(file)):
        raise RenameError(f"a {sym.kind} named `{new}` exists already")
    return [s.span for s in analysis.index.references(sym.kind, sym.name, stage)]


# ---- symbols ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outline:
    name: str
    kind: str
    span: Span        # the whole declaration
    selection: Span   # its name
    children: tuple[Outline, ...] = ()
    detail: str = ""


def outline(analysis: Analysis, file: str) -> list[Outline]:
    out: list[Outline] = []
    for f in analysis.compilation.files:
        if f.path != file:
            continue
        for item in f.items:
            if isinstance(item, ast.ProjectDecl):
                out.append(Outline(item.name.value, "project", item.span, item.name.span))
            elif isinstance(item, ast.MetricDecl):
                out.append(Outline(item.name.value, "metric", item.span, item.name.span))
            elif isinstance(item, ast.Stage):
                out.append(Outline(item.name.value, "stage", item.span, item.name.span, tuple(
                    Outline(rs.name.value, "ruleset", rs.span, rs.name.span,
                            detail=f"{len(rs.rules)} rule{'s' if len(rs.rules) != 1 else ''}")
                    for rs in item.rulesets)))
            elif isinstance(item, ast.Ruleset):
                out.append(Outline(item.name.value, "ruleset", item.span, item.name.span))
    return out


# ---- code actions -------------------------------------------------------------------------

_DID_YOU_MEAN = re.compile(r'did you mean (?:`([^`]+)`|"([^"]+)")\?')


@dataclass(frozen=True, slots=True)
class Fix:
    title: str
    span: Span
    text: str
    diagnostic: Diagnostic | None = None


def fixes(analysis: Analysis, file: str, start: int, end: int) -> list[Fix]:
    """Quick fixes for the diagnostics over [start, end]: the checker's did-you-mean, and
    `or` in a rule split into two rulesets (first-match makes them mean `or`)."""
    text = analysis.text(file) or ""
    out = []
    for d in analysis.diagnostics().get(file, []):
        if d.span.end < start or d.span.start > end:
            continue
        m = _DID_YOU_MEAN.search(d.help or "")
        if m:
            word = m.group(1) or m.group(2)
            old = text[d.span.start:d.span.end]
            new = f'"{word}"' if old.startswith('"') or m.group(2) else word
            out.append(Fix(f"replace with {new}", d.span, new, d))
        if d.code == "SG0001" and text[d.span.start:d.span.end] == "or":
            split = split_or(text, d.span)
            if split is not None:
                out.append(Fix("split into two rulesets (the first that triggers decides, so "
                               "they mean `or`)", split[0], split[1], d))
    return out


def _ruleset_block(text: str, at: int) -> tuple[int, int, str] | None:
    """The `ruleset NAME { … }` around offset `at`: (start, end, name)."""
    heads = list(re.finditer(r"(?m)^[ \t]*ruleset\s+([A-Za-z_][A-Za-z0-9_\-]*)\s*\{",
                             text[:at]))
    if not heads:
        return None
    head = heads[-1]
    depth = 0
    for m in _TOKEN.finditer(text, head.end() - 1):
        if m.group() == "{":
            depth += 1
        elif m.group() == "}":
            depth -= 1
            if depth == 0:
                return head.start(), m.end(), head.group(1)
    return None


def split_or(text: str, at: Span) -> tuple[Span, str] | None:
    block = _ruleset_block(text, at.start)
    if block is None:
        return None
    start, end, name = block
    line_start = text.rfind("\n", 0, at.start) + 1
    line_end = text.find("\n", at.start)
    line_end = len(text) if line_end < 0 else line_end
    line = text[line_start:line_end]
    m = re.match(r"^(\s*)when\s+(.+?)\s+or\s+(.+?)\s*$", line)
    if m is None or " or " in m.group(3):
        return None
    indent, left, right = m.groups()
    body = text[start:end]
    first = body.replace(line, f"{indent}when {left}", 1)
    second = body.replace(line, f"{indent}when {right}", 1)
    second = re.sub(r"ruleset\s+" + re.escape(name), f"ruleset {name}_or", second, count=1)
    return span_at(at.file, text, start, end), f"{first}\n\n{second}"


# ---- policy test cases for a threshold ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewCases:
    title: str
    test_file: Path  # where they go (created when it does not exist)
    text: str        # `[[case]]` tables to append


def threshold_cases(analysis: Analysis, file: str, offset: int) -> NewCases | None:
    """For the numeric rule under the cursor: policy test cases just below, at and above
    its threshold, with today's decisions as expectations (the coverage suggestions of
    `stageguard test --suggest`), for the stage's test file."""
    for f in analysis.compilation.files:
        if f.path != file:
            continue
        project = f.projects[0].name.value if f.projects else ""
        for stage in f.stages:
            for rs in stage.rulesets:
                for k, rule in enumerate(rs.rules):
                    if not (rule.span.start <= offset <= rule.span.end
                            and isinstance(rule.target, ast.Num)):
                        continue
                    doc = next((d for d in analysis.compilation.artifacts
                                if d.project == project and d.stage == stage.name.value), None)
                    if doc is None:
                        return None
                    coverage = Coverage()
                    coverage.sides[(stage.name.value, rs.name.value, k)] = set()
                    text = suggest({stage.name.value: doc.to_artifact()}, coverage)
                    if not text:
                        return None
                    shown = rule_source(rule.metric.value, rule.operator, rule.target.value)
                    return NewCases(f"add policy test cases around `{shown}` (below, at, "
                                    "above; expectations are today's decisions)",
                                    test_file_for(analysis.folder, stage.name.value), text)
    return None


def test_file_for(folder: Path, stage: str) -> Path:
    """The test file of a stage: one in the folder whose top-level `stage` names it, else
    `STAGE.test.toml`."""
    for path, named in test_stages(folder).items():
        if named == stage:
            return path
    return folder / f"{stage}{TEST_SUFFIX}"
