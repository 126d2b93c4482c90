"""Runtime benchmark (issue 3).

Run: .venv/bin/python benchmarks/bench_runtime.py

Measures in one run, pinned to one core:
- a stage of 8 rulesets over 6 metrics, 10,000 seeded payloads with precomputed metric
  values: the compiled fast path and the full `invoke()` (Response object included) against
  a hand-written Python if-chain computing the same 8 ruleset statuses;
- scaling of both with 10, 1,000 and 10,000 rulesets;
- loading a 10,000-ruleset artifact (parse, validate, verify digest, compile);
- `import stageguard.runtime.engine` time and process RSS (in fresh subprocesses).
Targets: fast path <= 2x the if-chain; invoke <= 10 us median; load < 200 ms; import
< 150 ms. Issue 17: invoke() <= 12x the if-chain; invoke() + to_json() <= 2x invoke(); at
1,000 and 10,000 rulesets the decision <= 3x a generated if-chain of the same rulesets.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.engine import Runtime
from stageguard.runtime.evaluate import statuses_of
from stageguard.runtime.model import Status
from stageguard.runtime.registry import Registry
from stageguard.runtime.served import load_model as _loaded
from stageguard.runtime.served import load_path as _load

T, NT = Status.TRIGGERED, Status.NOT_TRIGGERED

STAGE = """project bench
stage guard {
  ruleset injection {
    when prompt_injection any ["impersonation", "new_context"]
    override {
      choice "blocked: injection"
    }
  }
  ruleset abusive_input {
    when input_toxicity > 0.85
    override {
      choice "blocked: abuse"
    }
  }
  ruleset secrets {
    when output_pii any ["ssn", "credit_card_info"]
    override {
      choice "blocked: pii"
      choice "redacted"
    }
  }
  ruleset toxic_output {
    when output_toxicity >= 0.7
    override {
      choice "blocked: toxic"
    }
  }
  ruleset ungrounded {
    when context_adherence < 0.3
    when output_toxicity > 0.2
    passthrough
  }
  ruleset email_unsure {
    when output_pii contains "email"
    when context_adherence < 0.5
    passthrough
  }
  ruleset angry {
    when output_tone any ["anger", "fear"]
    when output_toxicity > 0.4
    passthrough
  }
  ruleset pii_and_rude {
    when output_pii is not empty
    when input_toxicity > 0.5
    passthrough
  }
}
"""

PII = ["ssn", "credit_card_info", "email", "phone_number", "address"]
INJ = ["impersonation", "new_context", "obfuscation", "simple_instruction"]
TONES = ["anger", "fear", "joy", "neutral", "sadness"]


def payload_metrics(rnd: random.Random) -> dict[str, object]:
    return {
        "input_toxicity": rnd.random(),
        "output_toxicity": rnd.random(),
        "context_adherence": rnd.random(),
        "output_pii": rnd.sample(PII, rnd.choice([0, 0, 0, 1, 2])),
        "prompt_injection": rnd.sample(INJ, rnd.choice([0, 0, 0, 0, 1])),
        "output_tone": rnd.choice(TONES),
    }


def if_chain(m: dict[str, object]) -> tuple[Status, ...]:
    """What a developer would write by hand for the same stage: all 8 statuses."""
    it, ot, ca = m["input_toxicity"], m["output_toxicity"], m["context_adherence"]
    pii, inj, tone = m["output_pii"], m["prompt_injection"], m["output_tone"]
    return (
        T if ("impersonation" in inj or "new_context" in inj) else NT,  # type: ignore[operator]
        T if it > 0.85 else NT,  # type: ignore[operator]
        T if ("ssn" in pii or "credit_card_info" in pii) else NT,  # type: ignore[operator]
        T if ot >= 0.7 else NT,  # type: ignore[operator]
        T if (ca < 0.3 and ot > 0.2) else NT,  # type: ignore[operator]
        T if ("email" in pii and ca < 0.5) else NT,  # type: ignore[operator]
        T if (tone in ("anger", "fear") and ot > 0.4) else NT,
        T if (pii and it > 0.5) else NT,  # type: ignore[operator]
    )


def per_call_each(fns: dict[str, tuple[Callable[[object], object], list]],
                  rounds: int = 7) -> dict[str, list[int]]:
    """Per-call times (ns) of several functions, each its best round by median, the
    collector paused as in timeit. Their rounds are taken in turn (a round of each, then
    the next round of each): the machine's drift over the run falls on all of them alike,
    so their ratios hold where sequential measurements would not."""
    best: dict[str, list[int]] = {}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, (fn, items) in fns.items():
            gc.collect()
            gc.disable()
            times = []
            for item in items:
                t0 = clock()
                fn(item)
                times.append(clock() - t0)
            gc.enable()
            if name not in best or statistics.median(times) < statistics.median(best[name]):
                best[name] = times
    return best


def total_ns(fn: Callable[..., object], items: list, rounds: int = 7,
             second: object = None) -> float:
    """Mean ns per call over the whole batch, best of `rounds` (no per-call timer cost).
    With `second`, calls fn(item, second) directly: no wrapper call to distort a ratio."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter_ns()
        if second is None:
            for item in items:
                fn(item)
        else:
            for item in items:
                fn(item, second)
        best = min(best, (time.perf_counter_ns() - t0) / len(items))
        gc.enable()
    return best


def pct(values: list[int], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def scaled_stage(n: int, seed: int = 5) -> str:
    rnd = random.Random(seed)
    metrics = ["input_toxicity", "output_toxicity", "context_adherence"]
    lines = ["project bench", "stage scaled {"]
    for i in range(n):
        a, b = rnd.sample(metrics, 2)
        lines += [f"  ruleset r{i} {{", f"    when {a} > {rnd.randint(50, 99) / 100}",
                  f"    when {b} < {rnd.randint(1, 50) / 100}", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def subprocess_figure(code: str, runs: int = 5) -> float:
    values = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        values.append(float(out.stdout.strip()))
    return statistics.median(values)


def main() -> int:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rnd = random.Random(2024)
    payloads = [payload_metrics(rnd) for _ in range(10_000)]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        reg = Path(tmp) / "reg"
        result = compile_text(STAGE, "bench.sg")
        Registry(reg).publish(result.artifacts)
        rt = Runtime(reg, rng=random.Random(1))
        loaded = _loaded(rt.artifact(project="bench", stage_name="guard"))
        decide = loaded.decide
        quick = loaded.decide_precomputed
        assert quick is not None

        # The fast path gets the normalised values, as invoke() hands them over.
        normalised = [{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}
                      for m in payloads]
        for m, n in zip(payloads, normalised, strict=True):  # same answers, or no benchmark
            assert statuses_of(decide(dict(n), lambda name: None)) == if_chain(m) == \
                statuses_of(quick(n))

        def invoke(m: dict[str, object]) -> object:
            return rt.invoke({"output": "the answer", "metrics": m}, "guard")

        def invoke_json(m: dict[str, object]) -> object:
            return rt.invoke({"output": "the answer", "metrics": m}, "guard").to_json()

        chain_ns = total_ns(if_chain, payloads)
        fast_ns = total_ns(quick, normalised)
        general_ns = total_ns(decide, normalised, second=_no_resolve)
        peers = {"invoke": (invoke, payloads), "json": (invoke_json, payloads),
                 "chain": (if_chain, payloads), "fast": (quick, normalised)}
        peer = galileo_first_match(rt.artifact(project="bench", stage_name="guard"))
        if peer is not None:  # the same winner, or no peer
            galileo, galileo_rulesets = peer
            for m in payloads:
                statuses = if_chain(m)
                won = galileo(m)
                assert (won is None) == (T not in statuses)
                assert won is None or won is galileo_rulesets[statuses.index(T)]
            peers["galileo"] = (galileo, payloads)
        calls = per_call_each(peers)
        invoke_calls, json_calls = calls["invoke"], calls["json"]
        chain_calls, fast_calls = calls["chain"], calls["fast"]
        triggered = sum(1 for m in payloads if T in if_chain(m))
        print(f"8 rulesets / 6 metrics, 10,000 seeded payloads ({triggered} trigger):")
        print(f"  hand-written if-chain : {chain_ns:8.0f} ns/decision (batch)  "
              f"median {statistics.median(chain_calls):6.0f} ns/call")
        print(f"  compiled fast path    : {fast_ns:8.0f} ns/decision (batch)  "
              f"median {statistics.median(fast_calls):6.0f} ns/call  "
              f"ratio {fast_ns / chain_ns:.2f}x (target <= 2x)")
        print(f"  general path (lazy metrics, failures): {general_ns:8.0f} ns/decision  "
              f"ratio {general_ns / chain_ns:.2f}x")
        inv_med = statistics.median(invoke_calls) / 1000
        print(f"  full invoke()         : median {inv_med:6.2f} us  p90 "
              f"{pct(invoke_calls, 0.9) / 1000:.2f} us  p99 {pct(invoke_calls, 0.99) / 1000:.2f}"
              f" us  (target median <= 10 us)")
        json_med = statistics.median(json_calls) / 1000
        print(f"  invoke() + to_json()  : median {json_med:6.2f} us  p90 "
              f"{pct(json_calls, 0.9) / 1000:.2f} us  ({json_med / inv_med:.1f}x invoke() alone)")
        inv_chain = inv_med * 1000 / statistics.median(chain_calls)
        print(f"  invoke() / if-chain   : {inv_chain:.1f}x (issue 17 target <= 12x); "
              f"invoke() + to_json() / invoke(): {json_med / inv_med:.2f}x (target <= 2x)")
        if "galileo" in calls:
            gal_med = statistics.median(calls["galileo"]) / 1000
            print(f"  galileo-core's first-match loop (Rule.evaluate, same rulesets): median "
                  f"{gal_med:6.2f} us, {gal_med * 1000 / statistics.median(chain_calls):.1f}x "
                  f"the if-chain; invoke() / it: {inv_med / gal_med:.2f}x (issue 17: at or "
                  "below it)")
        else:
            print("  galileo-core's first-match loop: not measured (galileo-core is not "
                  "installed: the conformance extra)")
        ok &= fast_ns / chain_ns <= 2.0 and inv_med <= 10.0
        ok17 = inv_chain <= 12 and json_med / inv_med <= 2

        print("scaling (rulesets of two score rules each; a large stage serves with closures "
              "at once and its generated code is swapped in when the background compile is "
              "done; timed after it):")
        for n in (10, 1_000, 10_000):
            art = compile_text(scaled_stage(n), "s.sg").artifacts[0].to_artifact()
            stage = _loaded(art)
            assert stage.compiled.wait(120)
            sample = normalised[: max(200, 10_000 // max(1, n // 10))]
            chain = generated_chain(art.rulesets)
            assert chain is not None and stage.decide_precomputed is not None
            for m in sample[:50]:
                assert statuses_of(stage.decide_precomputed(m)) == chain(m)  # type: ignore[arg-type]
            chain_per = total_ns(chain, sample, rounds=3)
            quick_per = total_ns(stage.decide_precomputed, sample, rounds=3)
            per = total_ns(stage.decide, sample, rounds=3, second=_no_resolve)
            srt = Runtime.from_files(_write(Path(tmp) / f"s{n}.json", art), rng=random.Random(1))
            for loaded_stage in srt._table.stages.values():
                assert loaded_stage.compiled.wait(120)
            per_inv = total_ns(lambda m, r=srt: r.invoke({"output": "x", "metrics": m},
                                                         "scaled"), payloads[: len(sample)],
                               rounds=3)
            srt.close()
            ratio = quick_per / chain_per
            print(f"  {n:>6} rulesets: generated if-chain {chain_per / 1000:8.2f} us, "
                  f"precomputed {quick_per / 1000:8.2f} us ({ratio:.2f}x; target <= 3x), "
                  f"general {per / 1000:8.2f} us ({per / chain_per:.2f}x), "
                  f"invoke {per_inv / 1000:8.2f} us")
            if n >= 1_000:
                ok17 &= ratio <= 3

        big = compile_text(scaled_stage(10_000), "big.sg").artifacts[0]
        path = Path(tmp) / "big.json"
        path.write_bytes(big.to_bytes(1))
        loads = []
        for _ in range(5):
            gc.collect()  # the previous round's stage is already freed: not timed below
            t0 = time.perf_counter()
            stage = _load(path)
            loads.append(time.perf_counter() - t0)
            stage.compiled.wait(120)  # its background compile, not timed, is not left running
            del stage
        build = []
        art = compile_text(scaled_stage(10_000), "s.sg").artifacts[0].to_artifact()
        for _ in range(5):
            gc.collect()
            t0 = time.perf_counter()
            stage = _loaded(art)
            build.append(time.perf_counter() - t0)
            stage.compiled.wait(120)
            del stage
        t0 = time.perf_counter()
        stage = _loaded(art)
        assert stage.compiled.wait(120)
        compile_ms = (time.perf_counter() - t0) * 1000
        del stage
        load_ms = statistics.median(loads) * 1000
        build_ms = statistics.median(build) * 1000
        print(f"load a 10,000-ruleset artifact ({path.stat().st_size / 1e6:.1f} MB) ready to "
              f"serve (read, validate, digest, build the decider): {load_ms:.0f} ms "
              f"(target < 200 ms; of which decider build alone {build_ms:.0f} ms); its "
              f"generated code follows in the background, compiled in "
              f"{compile_ms:.0f} ms")
        ok &= load_ms < 200
        ok17 &= load_ms < 200

        imp = subprocess_figure("import time; t = time.perf_counter(); "
                                "import stageguard.runtime.engine; "
                                "print(time.perf_counter() - t)") * 1000
        bare = subprocess_figure("import time; t = time.perf_counter(); import json, uuid, "
                                 "random; print(time.perf_counter() - t)") * 1000
        print(f"import stageguard.runtime.engine: {imp:.0f} ms (target < 150 ms; json+uuid+"
              f"random alone {bare:.0f} ms)")
        ok &= imp < 150
        # Peak RSS from /proc (VmHWM is per process; getrusage's maxrss would include the
        # forked benchmark process).
        hwm = ("print(int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"
               ".split()[1]) / 1024)")
        rss_code = ("from stageguard.runtime.engine import Runtime; "
                    f"rt = Runtime.from_files({str(path)!r}); " + hwm)
        base_code = "import stageguard.runtime.engine; " + hwm
        print(f"RSS (VmHWM): runtime imported {subprocess_figure(base_code, 3):.0f} MB; with the "
              f"10,000-ruleset stage loaded {subprocess_figure(rss_code, 3):.0f} MB")
        rt.close()
    print("targets met" if ok else "TARGETS MISSED")
    print("issue 17 targets met" if ok17 else "issue 17 targets MISSED")
    return 0 if ok else 1


def galileo_first_match(artifact: object
                        ) -> tuple[Callable[[dict[str, object]], object], list[Any]] | None:
    """Galileo's own rule semantics as a bare loop: the first ruleset all of whose rules
    hold, each by galileo-core's `Rule.evaluate`, over the same rulesets (exported), and
    those rulesets. What issue 17 sets invoke() against; None without galileo-core."""
    try:
        from galileo_core.schemas.protect.ruleset import Ruleset
    except ImportError:
        return None
    from stageguard.runtime.galileo import ruleset_to_galileo

    rulesets = [Ruleset.model_validate(ruleset_to_galileo(rs))
                for rs in artifact.rulesets]  # type: ignore[attr-defined]

    def first_match(m: dict[str, object]) -> object:
        for rs in rulesets:
            if all(rule.evaluate(m.get(rule.metric)) for rule in rs.rules):  # type: ignore[arg-type]
                return rs
        return None

    return first_match, rulesets


def generated_chain(rulesets: object) -> Callable[[dict[str, object]], object] | None:
    """What a developer generating Python for a stage of score rules would write: one
    conditional expression per ruleset over the metrics read once."""
    ops = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<=", "eq": "==", "neq": "!="}
    names: dict[str, str] = {}
    exprs = []
    for rs in rulesets:  # type: ignore[attr-defined]
        conds = []
        for rule in rs.rules:
            if rule.operator.value not in ops:
                return None
            var = names.setdefault(rule.metric, f"v{len(names)}")
            conds.append(f"{var} {ops[rule.operator.value]} {rule.target_value!r}")
        exprs.append(f"T if ({' and '.join(conds)}) else NT")
    src = ["def chain(m):"] + [f"    {v} = m[{k!r}]" for k, v in names.items()]
    src.append("    return (" + ", ".join(exprs) + ",)")
    namespace: dict[str, object] = {"T": T, "NT": NT}
    exec(compile("\n".join(src), "<if-chain>", "exec"), namespace)
    return namespace["chain"]  # type: ignore[return-value]


def _no_resolve(name: str) -> object:
    raise AssertionError(f"benchmark payloads carry every metric ({name})")


def _write(path: Path, art: object) -> Path:
    from stageguard.runtime.canonical import artifact_bytes

    path.write_bytes(artifact_bytes(art))  # type: ignore[arg-type]
    return path


if __name__ == "__main__":
    raise SystemExit(main())
