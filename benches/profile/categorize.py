#!/usr/bin/env python3
"""Sums a folded CPU profile (inferno-collapse-perf output, one `comm;frame;...;leaf count` per
line) into the stages of a block flow, so where the CPU time of a run goes reads as one table.
Usage: categorize.py profile.folded   (see benches/profile/README.md for how the profile is taken)"""
import collections
import sys

# (stage, any of these frame substrings), tried in order on each sample's frames from the leaf
# up: the innermost recognised frame names the stage.
STAGES = [
    ("approval check before the call (manifest stat walk)", ["ManifestVerifier"]),
    ("run record + audit entries (disk thread: serialise, write)", ["RunHistory", "AuditWriter", "audit::"]),
    ("response body (run record to JSON)", ["run_body", "RunView"]),
    ("request body (JSON parse, inputs)", ["json_object", "RunRequest"]),
    ("FlowRun (engine, context, record assembly)", ["FlowRun", "RunEngine", "rumi_domain::engine", "run_loaded_flow", "limiter"]),
    ("block call: frame encode, pipe write/read, reply parse", ["PackContainer", "pack_container", "worker::exchange", "frame::"]),
    ("HTTP: parse, route, respond (actix-web, TCP)", ["actix_http", "actix_web", "actix_router", "actix_server", "tcp_", "sock_"]),
    ("actor mailboxes and thread wake-ups", ["actix::mailbox", "actix::address", "eventfd", "Waker::wake", "wake_by"]),
    ("event loop: epoll, timers, scheduler", ["epoll", "park", "schedule", "tokio::runtime::time", "finish_task_switch"]),
]


def stage_of(frames):
    for f in reversed(frames):
        for name, keys in STAGES:
            if any(k in f for k in keys):
                return name
    return "other (allocator, libc, unattributed)"


def main(path):
    by_comm = collections.Counter()
    by_stage = collections.Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        comm = frames[0]
        by_comm[comm] += n
        if comm.startswith("python"):
            by_stage["block host (Python: frame, call, reply)"] += n
        elif comm.startswith("actix-rt"):
            by_stage[stage_of(frames[1:])] += n
    total = sum(by_stage.values())
    print(f"| stage | share of the kernel's and block host's CPU |")
    print(f"|---|---|")
    for name, n in by_stage.most_common():
        print(f"| {name} | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1])
