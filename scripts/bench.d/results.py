"""Writes one suite's rows into its section of bench/results.json and marks its targets.

    results.py RESULTS SUITE MACHINE ROWS.jsonl

Each target is recorded with its threshold, the figure measured and whether it was met, in
the section's "targets" list; a missed target stays in the file as missed.
"""

import datetime
import json
import statistics
import sys

path, suite, machine, rows_path = sys.argv[1:5]
rows = [json.loads(line) for line in open(rows_path) if line.strip()]
data = json.load(open(path))
targets = []


def target(name, value, limit, op="<="):
    met = value <= limit if op == "<=" else value >= limit
    targets.append({"target": name, "value": value, "limit": f"{op} {limit}", "met": met})


def pick(**kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


if suite == "local":
    # Images measured before and not now keep their figures (rows older than the 20 GiB image
    # have no "source" and are replaced).
    old = {(r["image"], r["mode"]): r for r in data.get("local", {}).get("results", []) if "source" in r}
    for r in rows:
        old[(r["image"], r["mode"])] = r
    order = {"cloud": 0, "generic": 1, "big": 2}
    modes = {"default": 0, "mbr": 1, "gpt": 2, "in-place": 3}
    rows = sorted(old.values(), key=lambda r: (order.get(r["image"], 9), modes.get(r["mode"], 9)))
    what = ("pv2hvm convert (release build) against the durable copy cp --sparse=always SRC COPY && "
            "sync COPY into the same directory, run alternately; ratio = median convert wall / median "
            "copy wall. default is the in-place layout written to a new file; in-place is convert "
            "--in-place on a copy made beforehand, untimed")
    if rows:
        worst = max(rows, key=lambda r: r["peak_rss_mib"]["median"])
        target(f"peak RSS MiB, every image and mode (highest: {worst['image']} {worst['mode']})",
               worst["peak_rss_mib"]["median"], 200)
    for r in pick(image="big"):
        limit = {"default": 1.1, "mbr": 1.3, "gpt": 1.3}.get(r["mode"])
        if limit:
            target(f"20 GiB {r['mode']}: ratio to the durable copy", r["ratio"], limit)
        if r["mode"] == "in-place":
            target("20 GiB --in-place: wall s", r["convert_wall_s"]["median"], 1.0)
    # Flat: the 20 GiB image costs no more memory than the 2 GiB one it was made from.
    growth = [r["peak_rss_mib"]["median"] / s["peak_rss_mib"]["median"]
              for r in pick(image="big") for s in pick(image="cloud", mode=r["mode"])]
    if growth:
        target("peak RSS on the 20 GiB image / on the 2 GiB cloud image, worst mode", round(max(growth), 3), 1.1)
    for r in rows:
        if r["image"] != "big" and r["mode"] == "default":
            target(f"{r['image']} default: ratio to the durable copy", r["ratio"], 1.5)
elif suite == "plan":
    what = ("pv2hvm plan: bytes and requests read from the source, bytes read a second time (in "
            "4 KiB chunks), EBS blocks fetched, and the whole files read with why")
    for p in ("local", "ebs"):
        small, big = pick(image="cloud", path=p), pick(image="big", path=p)
        if small and big:
            # The 20 GiB filesystem has more groups: its descriptors and the like, well under 1 MiB.
            target(f"{p}: 20 GiB image bytes read, at most the 2 GiB figure + 1 MiB",
                   big[0]["bytes_read"], small[0]["bytes_read"] + (1 << 20))
            if p == "ebs":
                target("ebs: 20 GiB image blocks fetched, at most the 2 GiB figure + 2",
                       big[0]["ebs_blocks_fetched"], small[0]["ebs_blocks_fetched"] + 2)
elif suite == "ebs":
    # Groups measured before and not now (a run with PV2HVM_BENCH_TRANSFER=0, or other images)
    # keep their rows.
    def group(r):
        if r["kind"] == "transfer":
            return ("transfer", r["endpoint"], r["direction"], r["latency_ms"], r["concurrency"])
        if r["kind"] == "metadata":
            return ("metadata", r["image"])
        return ("migrate", r["image"], r["layout"], r["concurrency"])
    fresh = {group(r) for r in rows}
    rows = [r for r in data.get("ebs", {}).get("results", []) if group(r) not in fresh] + rows
    what = ("EBS direct: benches/ebs_transfer downloads every block of the 2 GiB fixture's snapshot "
            "and uploads the fixture's non-zero blocks through pv2hvm's own EBS code, against an "
            "in-process endpoint holding every request latency_ms (the pipeline; ideal = concurrency "
            "/ latency blocks/s) and against the moto server with no latency (its ceiling). Then "
            "migrate i-... per layout and concurrency on moto holding every EBS request latency_ms, "
            "each run on a new instance; stages in seconds")
    summary = []
    tkey = lambda r: (r["endpoint"], r["direction"], r["latency_ms"], r["concurrency"])  # noqa: E731
    for key in sorted({tkey(r) for r in rows if r["kind"] == "transfer"}):
        rs = [r for r in rows if r["kind"] == "transfer" and tkey(r) == key]
        v = [r["blocks_per_s"] for r in rs]
        endpoint, key = key[0], key[1:]
        ideal = key[2] / (key[1] / 1000) if key[1] else None
        med = statistics.median(v)
        summary.append({"endpoint": endpoint, "direction": key[0], "latency_ms": key[1], "concurrency": key[2], "runs": len(v),
                        "blocks": max(r["blocks"] for r in rs),
                        "blocks_per_s": {"median": med, "min": min(v), "max": max(v)},
                        "ideal_blocks_per_s": ideal, "of_ideal": round(med / ideal, 3) if ideal else None})
        if ideal and key[2] == 64:
            target(f"{key[0]} at concurrency 64, {key[1]:g} ms: fraction of the ideal rate", round(med / ideal, 3), 0.8, ">=")
    order = {"cloud": 0, "big": 1, "empty": 2, "default": 0, "mbr": 1, "gpt": 2}
    migrates = {(r["image"], r["layout"], r["concurrency"]) for r in rows if r["kind"] == "migrate"}
    for key in sorted(migrates, key=lambda k: (order.get(k[0], 9), order.get(k[1], 9), k[2])):
        rs = [r for r in rows if r["kind"] == "migrate" and (r["image"], r["layout"], r["concurrency"]) == key]
        w = [r["wall_s"] for r in rs]
        stages = {s: statistics.median(r["stages"].get(s, 0) for r in rs) for s in rs[0]["stages"]}
        summary.append({"migrate": key[0], "layout": key[1], "concurrency": key[2], "runs": len(rs),
                        "wall_s": {"median": statistics.median(w), "min": min(w), "max": max(w)},
                        "stages_s": stages, "blocks_fetched": max(r["blocks_fetched"] for r in rs),
                        "blocks_uploaded": max(r["blocks_uploaded"] for r in rs),
                        "delta_blocks": rs[0]["delta_blocks"], "plan_blocks_fetched": rs[0]["plan_blocks_fetched"]})
        if key[1] == "default":
            r = max(rs, key=lambda r: r["blocks_uploaded"])
            target(f"{key[0]} in-place migrate (c={key[2]}): blocks uploaded, at most the delta + 1",
                   r["blocks_uploaded"], (r["delta_blocks"] or 0) + 1)
    small = [r for r in rows if r["kind"] == "migrate" and r["image"] == "cloud" and r["layout"] == "default"]
    big = [r for r in rows if r["kind"] == "migrate" and r["image"] == "big" and r["layout"] == "default"]
    empty = [r for r in rows if r["kind"] == "migrate" and r["image"] == "empty" and r["layout"] == "default"]
    meta = {r["image"]: r["blocks"] for r in rows if r["kind"] == "metadata"}
    for name, rs in (("cloud", small), ("big", big), ("empty", empty)):
        if rs and name in meta:
            # Everything in-place migrate fetches is metadata (for the plan and the final
            # e2fsck), the files the plan reads, and the blocks the edits change.
            r = max(rs, key=lambda r: r["blocks_fetched"])
            target(f"{name} in place: blocks fetched, at most the metadata's ({meta[name]}) + the plan's "
                   f"({r['plan_blocks_fetched']}) + the delta ({r['delta_blocks']})", r["blocks_fetched"],
                   meta[name] + (r["plan_blocks_fetched"] or 0) + (r["delta_blocks"] or 0))
    if big and empty:
        # Independent of the data: the 20 GiB filesystem with 8 GiB of data fetches what the same
        # filesystem without it fetches (its metadata and the files the plan reads and edits).
        # (Strictly: the data's own metadata, extent-tree leaves and initialised block bitmaps,
        # is fetched; its blocks are counted in the metadata figure above.)
        target("in place: blocks fetched on the 20 GiB image with 8 GiB of data, at most without it + 2",
               max(r["blocks_fetched"] for r in big), max(r["blocks_fetched"] for r in empty) + 2)
    data[suite] = {"what": what, "machine": machine, "date": datetime.date.today().isoformat(),
                   "summary": summary, "targets": targets, "results": rows}
elif suite == "fleet":
    what = ("fleet discover and fleet plan (concurrency 8) over N instances on a local moto server; "
            "every instance's plan reads the fixture's snapshot")
    # Sizes measured before and not now keep their figures.
    old = {(r["operation"], r["sources"]): r for r in data.get("fleet", {}).get("results", [])}
    for r in rows:
        old[(r["operation"], r["sources"])] = r
    rows = sorted(old.values(), key=lambda r: (r["sources"], r["operation"]))
    for op in ("discover", "plan"):
        rs = pick(operation=op)
        if len(rs) >= 2:
            a, b = rs[0], rs[-1]
            scale = b["sources"] / a["sources"]
            target(f"{op}: peak RSS MiB at {b['sources']}, at most the figure at {a['sources']} + 10%",
                   b["peak_rss_mib"]["median"], round(a["peak_rss_mib"]["median"] * 1.1, 1))
            target(f"{op}: wall s at {b['sources']}, at most {scale:g}x the figure at {a['sources']} (linear)",
                   b["wall_s"]["median"], round(a["wall_s"]["median"] * scale, 2))
elif suite == "rss":
    what = ("pv2hvm convert (the debug build the tests run; wall times are its) of every fixture and every "
            "hostile image of tests/fixtures/hostile.sh: peak RSS (/usr/bin/time %M), wall time and "
            "exit code (a hostile image may be refused: 3, or 8 when only e2fsck finds the damage)")
    for r in rows:
        target(f"{r['image']} ({r['kind']}, exit {r['exit']}): peak RSS MiB", r["peak_rss_mib"]["max"], 512)
    if rows:
        worst = max(rows, key=lambda r: r["peak_rss_mib"]["max"])
        target(f"peak RSS MiB, every image (highest: {worst['image']})", worst["peak_rss_mib"]["max"], 512)
else:
    sys.exit(f"unknown suite {suite}")

if suite != "ebs":
    data[suite] = {"what": what, "machine": machine, "date": datetime.date.today().isoformat(),
                   "targets": targets, "results": rows}
json.dump(data, open(path, "w"), indent=2)
open(path, "a").write("\n")
for t in targets:
    print(("met   " if t["met"] else "MISSED") + f"  {t['target']}: {t['value']} (target {t['limit']})")
