"""`python -m benchmarks [--smoke] [--only GROUPS] [--out FILE]`: run, print one table, write the doc."""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import mcp_floor, peers, profiles, queues, scale, store_limit, tokens
from benchmarks.report import Row, Section, markdown_table

GROUPS = ("store", "peers", "mcp", "scale", "tokens")
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
KEEP_MARKER = "<!-- Everything below this line is written by hand; `make bench` keeps it and rewrites the rest. -->"


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is: the full run, or the smoke run inside `make test`."""

    tasks: int
    mcp_calls: int
    mcp_concurrent: int
    scale: tuple[int, ...]
    samples: int
    graph: int
    profile: int


FULL = Sizes(
    tasks=20_000,
    mcp_calls=2_000,
    mcp_concurrent=1_600,
    scale=(1_000, 10_000, 100_000, 1_000_000),
    samples=500,
    graph=10_000,
    profile=3_000,
)
SMOKE = Sizes(tasks=200, mcp_calls=20, mcp_concurrent=16, scale=(200, 1_000), samples=20, graph=200, profile=0)


def run_groups(workdir: Path, sizes: Sizes, only: tuple[str, ...] = GROUPS, log: bool = True) -> list[Section]:
    """Run the chosen groups in `workdir`; each returns a `Section` of rows."""
    sections: list[Section] = []

    def say(text: str) -> None:
        if log:
            print(text, file=sys.stderr, flush=True)

    if "store" in only or "peers" in only:
        say("queues: ours, raw sqlite3 and peers, in turns ...")
        timings = queues.race(workdir, sizes.tasks, peers="peers" in only)
        if "store" in only:
            sections.append(store_limit.section(workdir, sizes.tasks, timings))
        if "peers" in only:
            sections.append(peers.section(sizes.tasks, timings))
    if "mcp" in only:
        say("MCP vs the SDK floor ...")
        sections.append(mcp_floor.run(workdir, sizes.mcp_calls, sizes.mcp_concurrent))
    if "scale" in only:
        say("scale ...")
        sections.append(scale.run(workdir, list(sizes.scale), sizes.samples, sizes.graph))
    if "tokens" in only:
        say("token cost ...")
        sections.append(tokens.run(workdir))
    return sections


def missed_profiles(workdir: Path, sections: list[Section], count: int) -> list[str]:
    """pyinstrument profiles of the workloads behind missed targets."""
    missed = {row.group for section in sections for row in section.rows if row.ok is False}
    if not missed or not count or not profiles.available():
        return []
    out = []
    if missed & {store_limit.GROUP, peers.GROUP}:
        out.append(
            f"### Profile: TaskQueue.claim + complete, {count:,} tasks\n\n```text\n"
            + profiles.store_claim_complete(workdir, count)
            + "\n```"
        )
        out.append(
            f"### Profile: TaskQueue.create, {count:,} tasks\n\n```text\n"
            + profiles.store_enqueue(workdir, count)
            + "\n```"
        )
    if mcp_floor.GROUP in missed:
        out.append(
            f"### Profile: claim_task + complete_task in memory, {count // 3:,} round trips\n\n```text\n"
            + profiles.mcp_in_memory(workdir, count // 3)
            + "\n```"
        )
    return out


def find(sections: list[Section], group: str, name: str) -> Row | None:
    return next((r for sec in sections for r in sec.rows if r.group == group and r.name == name), None)


def time_budget(sections: list[Section]) -> list[str]:
    """Microseconds per claim+complete round trip: the SDK floor, our queue work, and the rest."""
    queue = find(sections, store_limit.GROUP, "claim+complete")
    if queue is None:
        return []
    queue_us = 1e6 / queue.value
    lines = [
        "## Where the time goes",
        "",
        "Microseconds per claim+complete round trip (two tool calls), from the rows above: the SDK floor, "
        "`TaskQueue` work (group 1), and what is left, which is our MCP layer (argument and result models, "
        "the worker-thread hop, `reply()`, and the SDK's per-byte costs on our larger results, e.g. the "
        "client validating structured content against our output schema).",
        "",
        "| transport | floor | TaskQueue | our MCP layer | total | target total |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, target in (("in memory, 1 client", 0.5), ("stdio, 1 client", 0.8)):
        row = find(sections, mcp_floor.GROUP, name)
        if row is None or not row.baseline:
            continue
        floor_us = 2e6 / row.baseline
        total_us = 2e6 / row.value
        rest = total_us - floor_us - queue_us
        lines.append(
            f"| {name} | {floor_us:,.0f} | {queue_us:,.0f} | {rest:,.0f} | {total_us:,.0f} | <= {floor_us / target:,.0f} |"
        )
    return lines if len(lines) > 7 else []


def render(sections: list[Section], command: str, seconds: float, extra: list[str], kept: str = "") -> str:
    rows = [row for section in sections for row in section.rows]
    lines = [
        "# Performance",
        "",
        f"Produced by `{command}` in {seconds:.0f} s on {platform.machine()} Linux, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "Every figure was measured in the same run on the same machine; quote the ratios, not the absolute numbers.",
        "",
        markdown_table(rows),
    ]
    for section in sections:
        if section.notes:
            lines += ["", f"**{section.title}**", ""] + [f"- {note}" for note in section.notes]
    budget = time_budget(sections)
    if budget:
        lines += ["", *budget]
    if extra:
        lines += ["", "## Profiles of missed targets", ""] + ["\n\n".join(extra)]
    lines += ["", KEEP_MARKER]
    return "\n".join(lines) + "\n" + (kept or "\n")


def kept_text(path: Path) -> str:
    """The hand-written part of an existing document (everything after the marker)."""
    if not path.exists():
        return ""
    text = path.read_text()
    return text.split(KEEP_MARKER, 1)[1] if KEEP_MARKER in text else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), as in make test")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups from {GROUPS}")
    parser.add_argument(
        "--out", default=None, help="write the Markdown here (default docs/performance.md; none with --smoke)"
    )
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = [name for name in only if name not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {GROUPS}")
    sizes = SMOKE if args.smoke else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcp-taskqueue-bench-") as tmp:
        sections = run_groups(Path(tmp), sizes, only)
        extra = missed_profiles(Path(tmp), sections, sizes.profile)
    seconds = time.perf_counter() - started
    given = sys.argv[1:] if argv is None else argv
    command = "make bench" if not given else "python -m benchmarks " + " ".join(given)
    print(markdown_table([row for section in sections for row in section.rows]))
    out = args.out if args.out is not None else (None if args.smoke else str(DOC))
    if out:
        document = render(sections, command, seconds, extra, kept_text(Path(out)))
        Path(out).write_text(document)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
