"""Language server latency: a keystroke in a 1,000-ruleset file to its diagnostics.

A real `stageguard lsp` process and a pygls client over stdio. The file is opened, then
edited N times (one character, alternately making a typo'd metric and fixing it), each edit
after the previous one's diagnostics arrived; the time from sending the change to receiving
the diagnostics of that edit, less the server's debounce, is the latency. The analysis
(lint) runs after each check; a second series types faster than lint finishes, to show the
check's answer is not held up by it. Baseline, same run: compiling the same text in this
process (parse, check, artifacts), which the server must do at least once per edit.

Run: .venv/bin/python benchmarks/bench_lsp.py [--rulesets 1000] [--edits 20]
Target (issue 18): diagnostics within 300 ms of the last keystroke after the debounce.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import big_policy

from stageguard.compiler.pipeline import compile_text

DEBOUNCE_MS = 150


async def measure(text: str, edits: int, pause: float | None) -> list[float]:
    """Latencies in ms. `pause`: wait that long between edits instead of for the answer."""
    folder = Path(tempfile.mkdtemp(prefix="bench-lsp-"))
    path = folder / "big.sg"
    path.write_text(text)
    uri = path.as_uri()
    client = LanguageClient("bench", "1")
    waiting: dict[int, asyncio.Future[float]] = {}
    version = 1

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def published(params: lsp.PublishDiagnosticsParams) -> None:
        if params.uri != uri:
            return
        now = time.perf_counter()
        typo = any(d.code == "SG0201" for d in params.diagnostics)
        # The diagnostics say which edit they answer: odd versions carry the typo.
        for v, fut in list(waiting.items()):
            if not fut.done() and (v % 2 == 1) == typo:
                fut.set_result(now)
                del waiting[v]

    exe = Path(sys.executable).with_name("stageguard")
    await client.start_io(str(exe), "lsp")
    await client.initialize_async(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(), root_uri=folder.as_uri(),
        initialization_options={"debounce": DEBOUNCE_MS}))
    client.initialized(lsp.InitializedParams())
    first: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    waiting[0] = first  # version 0 (even): the clean open
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri, "stageguard", version, text)))
    await asyncio.wait_for(first, 60)
    good, bad = "when output_toxicity", "when output_toxicty"
    latencies = []
    for i in range(1, edits + 1):
        version += 1
        body = text.replace(good, bad, 1) if i % 2 == 1 else text
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiting[i] = fut
        sent = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(version, uri),
            [lsp.TextDocumentContentChangeWholeDocument(body)]))
        if pause is None:
            got = await asyncio.wait_for(fut, 60)
            latencies.append((got - sent) * 1000 - DEBOUNCE_MS)
        else:
            await asyncio.sleep(pause)
            if i == edits:
                got = await asyncio.wait_for(fut, 60)
                latencies.append((got - sent) * 1000 - DEBOUNCE_MS)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rulesets", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=20)
    args = ap.parse_args()
    text = big_policy(args.rulesets).replace("when output_toxicity", "when output_toxicity", 1)
    if "when output_toxicity" not in text:
        text = text.replace("  ruleset r0 {\n", "  ruleset r0 {\n    when output_toxicity > 0.5\n")
    compile_ms = []
    for _ in range(5):
        t = time.perf_counter()
        compile_text(text)
        compile_ms.append((time.perf_counter() - t) * 1000)
    base = statistics.median(compile_ms)
    paced = asyncio.run(measure(text, args.edits, None))
    # Typing every 200 ms: each edit lands while the previous edit's lint may still run.
    fast = asyncio.run(measure(text, 10, 0.2))
    lines = text.count("\n")
    print(f"# {platform.python_version()} on {os.cpu_count()} cores; {args.rulesets} rulesets, "
          f"{lines:,} lines; debounce {DEBOUNCE_MS} ms (subtracted)")
    print("| what | p50 ms | max ms | ÷ compile |")
    print("|---|---:|---:|---:|")
    print(f"| compile in-process (baseline) | {base:.0f} | {max(compile_ms):.0f} | 1.00 |")
    print(f"| keystroke → diagnostics, one edit at a time | {statistics.median(paced):.0f} | "
          f"{max(paced):.0f} | {statistics.median(paced) / base:.2f} |")
    print(f"| last of 10 keystrokes 200 ms apart → diagnostics | {fast[-1]:.0f} | "
          f"{fast[-1]:.0f} | {fast[-1] / base:.2f} |")


if __name__ == "__main__":
    main()
