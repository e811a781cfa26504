"""Renders bench/results.json as the README's Markdown tables, between the bench-table markers.

    table.py RESULTS README
"""

import json
import re
import sys

results_path, readme_path = sys.argv[1:3]
data = json.load(open(results_path))
out = []


def mark(section):
    rows = section.get("targets", [])
    if not rows:
        return
    out.append("\n| target | measured | limit | |\n| --- | --- | --- | --- |")
    for t in rows:
        out.append(f"| {t['target']} | {t['value']} | {t['limit']} | {'met' if t['met'] else '**missed**'} |")


def head(name, section, columns, note=""):
    """The section's title line, then a table header of `columns`."""
    out.append(f"Latest `{name}`, from {section['machine']}, {section['date']}{note}:\n")
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + " --- |" * len(columns))


def mmm(d):
    return f"{d['median']} ({d['min']}–{d['max']})"


if "local" in data:
    s = data["local"]
    head("local", s, ["image", "mode", "convert wall s: median (min–max)", "CPU s", "peak RSS MiB",
                      "durable copy s: median (min–max)", "ratio"])
    for r in s["results"]:
        name = {"big": "20 GiB (8.3 GiB data)"}.get(r["image"], r["image"] + " (2 GiB)")
        mode = {"default": "default (in-place layout)", "in-place": "`--in-place`"}.get(r["mode"], r["mode"])
        out.append(f"| {name} | {mode} | {mmm(r['convert_wall_s'])} | {r['convert_cpu_s']} | "
                   f"{r['peak_rss_mib']['median']} | {mmm(r['durable_copy_wall_s'])} | {r['ratio']}× |")
    mark(s)
    out.append("")
if "plan" in data:
    s = data["plan"]
    head("plan", s, ["image", "read from", "bytes read", "requests", "bytes read again", "EBS blocks fetched",
                     "files read"])
    for r in s["results"]:
        out.append(f"| {r['image']} | {r['path']} | {r['bytes_read']} | {r['requests']} | {r['read_again_bytes']} | "
                   f"{r['ebs_blocks_fetched'] if r['ebs_blocks_fetched'] is not None else '–'} | {len(r['files_read'])} |")
    mark(s)
    out.append("")
if "ebs" in data:
    s = data["ebs"]
    head("ebs", s, ["endpoint", "transfer", "latency ms", "concurrency", "blocks", "blocks/s: median (min–max)",
                    "ideal", "of ideal"])
    for r in s["summary"]:
        if "direction" in r:
            b = r["blocks_per_s"]
            out.append(f"| {r['endpoint']} | {r['direction']} | {r['latency_ms']:g} | {r['concurrency']} | {r['blocks']} | "
                       f"{b['median']:.1f} ({b['min']:.1f}–{b['max']:.1f}) | "
                       f"{r['ideal_blocks_per_s'] or '–'} | {r['of_ideal'] if r['of_ideal'] is not None else '–'} |")
    out.append("\n| migrate | layout | concurrency | wall s: median (min–max) | stages s (median) | blocks fetched (by the plan) | uploaded | delta |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in s["summary"]:
        if "migrate" in r:
            w = r["wall_s"]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
            name = {"cloud": "cloud (2 GiB)", "big": "20 GiB, 8 GiB data", "empty": "20 GiB, no data"}.get(r["migrate"], r["migrate"])
            layout = {"default": "default (in-place)"}.get(r["layout"], r["layout"])
            out.append(f"| {name} | {layout} | {r['concurrency']} | {w['median']:.1f} ({w['min']:.1f}–{w['max']:.1f}) | "
                       f"{stages} | {r['blocks_fetched']} ({r['plan_blocks_fetched']}) | {r['blocks_uploaded']} | {r['delta_blocks'] if r['delta_blocks'] is not None else '–'} |")
    meta = [r for r in s["results"] if r.get("kind") == "metadata"]
    if meta:
        out.append("\nThe filesystems' metadata as `e2image -r` copies it, in 512 KiB blocks: " +
                   ", ".join(f"{r['image']} {r['blocks']}" for r in meta) + ".")
    mark(s)
    out.append("")
if "fleet" in data:
    s = data["fleet"]
    head("fleet", s, ["operation", "sources", "runs", "wall s: median (min–max)", "peak RSS MiB: median (min–max)"],
         " (moto on the same machine)")
    for r in s["results"]:
        out.append(f"| fleet {r['operation']} | {r['sources']} | {r['runs']} | {mmm(r['wall_s'])} | {mmm(r['peak_rss_mib'])} |")
    mark(s)
    out.append("")
if "rss" in data:
    s = data["rss"]
    head("rss", s, ["image", "kind", "exit", "wall s: median (min–max)", "peak RSS MiB: median (min–max)"])
    for r in s["results"]:
        out.append(f"| {r['image']} | {r['kind']} | {r['exit']} | {mmm(r['wall_s'])} | {mmm(r['peak_rss_mib'])} |")
    # One line for the whole suite; the per-image targets are in bench/results.json.
    s = dict(s, targets=[t for t in s["targets"] if t["target"].startswith("peak RSS MiB, every image")])
    mark(s)

readme = open(readme_path).read()
block = "<!-- bench-table -->\n" + "\n".join(out).rstrip() + "\n<!-- /bench-table -->"
new, n = re.subn(r"<!-- bench-table -->.*?<!-- /bench-table -->", lambda _: block, readme, flags=re.S)
if n != 1:
    sys.exit(f"{readme_path}: no bench-table markers")
open(readme_path, "w").write(new)
