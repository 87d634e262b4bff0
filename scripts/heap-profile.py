#!/usr/bin/env python3
"""Sums a dhat heap profile of the operator by component.

Usage: scripts/heap-profile.py PROFILE.json [--top N] [--unknown N]

Reads the JSON that a `heap-profile` build writes on SIGTERM (see
src/heap_profile.rs; `make heap-profile` makes one at 10,000 Integrations)
and prints, per component, the live heap bytes at the global peak (t-gmax)
and at the end (when the operator was asked to stop: the running operator
with its caches), and the bytes allocated in all. Each allocation site
(dhat's program point: one call stack) goes to the first component whose
rule matches one of its frames, rules tried in order; sites that no rule
matches are "other", and `--unknown N` lists the largest of them.

dhat counts requested bytes, without the allocator's rounding and
fragmentation: RSS is larger, and comes from a normal release build.
"""

import argparse
import json
import re
import sys

# (component, frame pattern). Rules above GENERIC name an owner (a module
# of ours, a type, a cache): the owner rule matching the frame nearest the
# allocation wins (an Integration decoded while the controller polls its
# watch belongs to the Integration, not to the poller). Only a site that
# no owner rule matches goes to the first generic rule (in order) that any
# of its frames matches: the decoder, the HTTP client, the runtime.
# Inlined frames carry a bare function name and their file, so the owner
# rules match file paths too.
RULES = [
    # Allocation sites inside the profiler itself (the output it builds).
    ("dhat itself", r"\bdhat::"),
    # The operator's own structures.
    ("timetable", r"controller::scale::timetable::|controller/scale/timetable\.rs"),
    # The Integration cache: entries (the compact form), keys, interned
    # strings, the map itself.
    ("Integration cache (compact entries, keys, map)", r"controller::scale::(cache|cached|key)::|controller/scale/(cache|cached|key)\.rs"),
    ("controller loop (runner, scheduler)", r"controller::scale::runner::|controller/scale/runner\.rs|kube_runtime::scheduler"),
    ("owned-Secret cache (projection, verified versions)", r"controller::scale::owned::|controller/scale/owned\.rs"),
    ("shared input reads", r"controller::scale::shared_reads::|controller/scale/shared_reads\.rs"),
    ("Events publisher", r"controller::scale::events::|controller/scale/events\.rs"),
    ("metrics (registry, expiry gauges, scrape)", r"integration_operator::telemetry|prometheus_client::"),
    ("inbound server", r"integration_operator::inbound::"),
    ("provider drivers and limiter", r"integration_providers::|providers/src/"),
    # What the watches decode and the stores keep, by type: the objects are
    # decoded while the controller polls its watches, so these come before
    # the controller's own machinery.
    # Integrations as decoded from the watch, before the cache packs them.
    ("Integrations being decoded", r"integration_operator::crd::Integration\b|integration_operator::crd::IntegrationS"),
    ("reflector store: ClusterProviders", r"integration_operator::crd::ClusterProvider"),
    ("Secret metadata (watches)", r"PartialObjectMeta|k8s_openapi::api::core::v1::secret::Secret"),
    ("reflector store keys and maps", r"kube_runtime::reflector::store::|src/reflector/store\.rs|reflector/object_ref\.rs"),
    ("reconcile (in flight)", r"integration_operator::controller::reconcile::|controller/reconcile/"),
    ("GENERIC", None),
    ("kube-runtime (other)", r"kube_runtime::(controller|utils)"),
    ("kube-runtime reflector/watcher (other)", r"kube_runtime::(reflector|watcher)"),
    ("operator (other)", r"integration_operator::"),
    ("kube client (requests, watch decoding)", r"kube_client::|tower::|tower_http::"),
    ("HTTP, TLS (hyper, h2, rustls, reqwest)", r"\bhyper(_util)?::|\bh2::|\brustls::|tokio_rustls|\breqwest::|\bhttp::"),
    ("JSON and YAML decoding (other)", r"serde_json::|serde_yaml::"),
    ("tokio runtime", r"\btokio::"),
    ("logging (tracing)", r"\btracing"),
    ("start-up (CLI, config)", r"clap::"),
]


GENERIC = [n for n, _ in RULES].index("GENERIC")

# Generic arguments name types, not owners: `insert<Instant, IntegrationKey>`
# is the timetable's map growing, not the Integration cache, and
# `realloc<dhat::Alloc>` is any reallocation, not the profiler. They are cut
# from a frame before the owner rules see it (a `<Type as Trait>` qualifier
# stays); the generic rules still read them, as inlined library frames name
# their crate nowhere else.
GENERIC_ARGS = re.compile(r"(?<=[A-Za-z0-9_}])<[^<>]*>")


def without_generic_args(frame):
    while True:
        cut = GENERIC_ARGS.sub("", frame)
        if cut == frame:
            return frame
        frame = cut


def classify(frames, ftbl, compiled, memo):
    """See RULES. Each distinct frame is matched once (frames are long, and
    shared by many sites)."""
    generic = len(compiled)
    for i in frames:  # nearest the allocation first
        hit = memo.get(i)
        if hit is None:
            owner_frame = without_generic_args(ftbl[i])
            hit = next(
                (
                    k
                    for k, (_, rx) in enumerate(compiled)
                    if rx and rx.search(owner_frame if k < GENERIC else ftbl[i])
                ),
                len(compiled),
            )
            memo[i] = hit
        if hit < GENERIC:
            return compiled[hit][0]
        generic = min(generic, hit)
    return compiled[generic][0] if generic < len(compiled) else "other"


def mib(b):
    return b / (1024 * 1024)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--unknown", type=int, default=0, help="list the N largest unmatched sites (at the end)")
    ap.add_argument("--component", help="list the largest sites of this component (at the end)")
    ap.add_argument("--top", type=int, default=8, help="sites listed with --unknown/--component")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()

    with open(args.profile) as f:
        prof = json.load(f)
    ftbl = prof["ftbl"]
    compiled = [(n, re.compile(r) if r else None) for n, r in RULES]
    rows = {}
    sites = {}
    memo = {}
    for pp in prof["pps"]:
        comp = classify(pp["fs"], ftbl, compiled, memo)
        r = rows.setdefault(comp, [0, 0, 0, 0])
        r[0] += pp.get("gb", 0)
        r[1] += pp.get("eb", 0)
        r[2] += pp.get("ebk", 0)
        r[3] += pp["tb"]
        sites.setdefault(comp, []).append(pp)

    total = [sum(r[i] for r in rows.values()) for i in range(4)]
    order = sorted(rows.items(), key=lambda kv: -kv[1][1])
    if args.markdown:
        print("| component | live at peak | live at end | blocks at end | allocated in all |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, r in order:
            print(f"| {name} | {mib(r[0]):.1f} MiB | {mib(r[1]):.1f} MiB | {r[2]:,} | {mib(r[3]):,.0f} MiB |")
        print(f"| **total** | {mib(total[0]):.1f} MiB | {mib(total[1]):.1f} MiB | {total[2]:,} | {mib(total[3]):,.0f} MiB |")
    else:
        print(f"{'component':<52} {'peak MiB':>9} {'end MiB':>9} {'end blocks':>11} {'alloc MiB':>10}")
        for name, r in order:
            print(f"{name:<52} {mib(r[0]):>9.2f} {mib(r[1]):>9.2f} {r[2]:>11,} {mib(r[3]):>10,.0f}")
        print(f"{'total':<52} {mib(total[0]):>9.2f} {mib(total[1]):>9.2f} {total[2]:>11,} {mib(total[3]):>10,.0f}")
        print(f"(t-gmax {prof.get('tg', 0) / 1e6:.1f} s, t-end {prof.get('te', 0) / 1e6:.1f} s after start)")

    def show(comp):
        print(f"\n== largest sites of {comp!r} at the end")
        for pp in sorted(sites.get(comp, []), key=lambda p: -p.get("eb", 0))[: args.top]:
            print(f"-- {mib(pp.get('eb', 0)):.2f} MiB in {pp.get('ebk', 0):,} blocks (peak {mib(pp.get('gb', 0)):.2f})")
            for i in pp["fs"][:40]:
                frame = re.sub(r"^0x[0-9a-f]+: ", "", ftbl[i])
                if re.search(r"alloc::alloc::|alloc::raw_vec|core::ptr|__rust|dhat::|backtrace::", frame):
                    continue
                print("     " + frame[:220])

    if args.unknown:
        args.top = args.unknown
        show("other")
    if args.component:
        show(args.component)


if __name__ == "__main__":
    sys.exit(main())
