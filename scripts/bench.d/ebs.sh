# scripts/bench ebs: EBS direct transfer against concurrency / latency, then `migrate` in each
# layout, on a local server that holds each EBS request PV2HVM_BENCH_LATENCY_MS (default 50).
# Sourced by scripts/bench.
runs=${PV2HVM_BENCH_RUNS:-5}
latency=${PV2HVM_BENCH_LATENCY_MS:-50}
concurrencies=(1 16 64)
rows=$work/ebs.jsonl
: >"$rows"
echo "building the transfer benchmark (release)" >&2
cargo bench --locked --quiet --bench ebs_transfer --no-run 2>&1 | grep -v '^ *Executable' >&2 || true
cloud=$(fixture cloud)

# The pipeline: pv2hvm's EBS code against an in-process endpoint that holds every request
# $latency ms and does little else (benches/ebs_transfer). Then the moto server's own ceiling
# (no latency, 64 at once), which bounds the migrate figures below.
label() {
  "$python" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line); r.update(kind="transfer", endpoint=sys.argv[1], latency_ms=float(sys.argv[2])); print(json.dumps(r))' "$@"
}
# PV2HVM_BENCH_TRANSFER=0 skips this part (the figures already in the results file stay).
if [ "${PV2HVM_BENCH_TRANSFER:-1}" != 0 ]; then
  cargo bench --locked --quiet --bench ebs_transfer -- "$cloud" "${concurrencies[@]}" --fake-latency-ms "$latency" --runs "$runs" |
    label in-process "$latency" >>"$rows"
  start_moto
  snap=$("$python" tests/aws/tool.py fleet-seed "$cloud" 0 --name transfer | "$python" -c 'import json, sys; print(json.load(sys.stdin)["snapshot"])')
  cargo bench --locked --quiet --bench ebs_transfer -- "$cloud" 64 --snapshot "$snap" --runs "$runs" | label moto 0 >>"$rows"
fi
printf '%-11s %-9s %8s %11s %8s %22s %8s\n' endpoint direction latency concurrency blocks "blocks/s (med min max)" "of ideal"
"$python" - "$rows" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if '"transfer"' in l]
key = lambda r: (r["endpoint"], r["direction"], r["latency_ms"], r["concurrency"])
for e, d, lat, c in sorted({key(r) for r in rows}):
    rs = [r["blocks_per_s"] for r in rows if key(r) == (e, d, lat, c)]
    blocks = max(r["blocks"] for r in rows if key(r) == (e, d, lat, c))
    ideal = c / (lat / 1000) if lat else None
    med = statistics.median(rs)
    print("%-11s %-9s %6g ms %11d %8d %8.1f %6.1f %6.1f %8s" % (e, d, lat, c, blocks, med, min(rs), max(rs),
          "%.2f" % (med / ideal) if ideal else "-"))
PY

# migrate i-… in each layout and at each concurrency, each run on a new instance of the same
# AMI; what it made is removed after each run (untimed). In place also on the 20 GiB image
# (big) and on the same filesystem without its 8 GiB of data (empty): what it fetches must
# not depend on the data.
image_of() {
  case $1 in
    big) big_fixture 8 ;;
    empty) big_fixture 0 ;;
    *) echo "$cloud" ;;
  esac
}
# The filesystem's metadata as e2fsprogs sees it, in EBS blocks: e2image -r copies only the
# metadata into a sparse file, whose data ranges are counted in 512 KiB blocks. What in-place
# migrate may fetch is this, the files the plan reads and the blocks it changes.
for image in cloud big empty; do
  e2image -r "$(image_of "$image")" "$work/metadata.img"
  "$python" - "$work/metadata.img" "$image" >>"$rows" <<'PY'
import json, os, sys
fd, blocks, pos = os.open(sys.argv[1], os.O_RDONLY), set(), 0
end = os.fstat(fd).st_size
while pos < end:
    try:
        start = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    stop = os.lseek(fd, start, os.SEEK_HOLE)
    blocks.update(range(start // 524288, (stop - 1) // 524288 + 1))
    pos = stop
print(json.dumps({"kind": "metadata", "image": sys.argv[2], "blocks": len(blocks)}))
PY
  rm -f "$work/metadata.img"
done

for image in ${PV2HVM_BENCH_IMAGES:-cloud big empty}; do
  [ "$image" != none ] || continue
  case $image in
    big) src=$(big_fixture 8) ;;
    empty) src=$(big_fixture 0) ;;
    *) src=$cloud ;;
  esac
  start_moto PV2HVM_MOTO_EBS_LATENCY_MS="$latency"
  echo "uploading $(basename "$src") to the local server" >&2
  ami=$("$python" tests/aws/tool.py fleet-seed "$src" 0 --name "migrate-$image" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["image"])')
  # migrate at the two wider concurrencies: at 1, the transfer figures above already show the cost.
  if [ "$image" = cloud ]; then layouts=(default mbr gpt); cs=(16 64); else layouts=(default); cs=(64); fi
  for layout in "${layouts[@]}"; do
    for c in "${cs[@]}"; do
      for run in $(seq "$runs"); do
        inst=$("$python" tests/aws/tool.py add-instances "$ami" 1 | "$python" -c 'import json, sys; print(json.load(sys.stdin)[0])')
        args=(-q migrate "$inst" --yes --format json --concurrency "$c" --work-dir "$work")
        [ "$layout" = default ] || args+=(--layout "$layout")
        /usr/bin/time -f '%e %M' -o "$work/time" "$bin" "${args[@]}" >"$work/migrate.json" 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
        "$python" - "$work/migrate.json" "$work/time" "$image" "$layout" "$c" "$run" "$latency" >>"$rows" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
wall, rss = open(sys.argv[2]).read().split()
plan = m.get("plan") or {}
edited = sum(f["bytes"] for f in plan.get("files_read", []))
print(json.dumps({
    "kind": "migrate", "image": sys.argv[3], "layout": sys.argv[4], "concurrency": int(sys.argv[5]),
    "run": int(sys.argv[6]), "latency_ms": float(sys.argv[7]), "wall_s": float(wall), "peak_rss_mib": round(int(rss) / 1024, 1),
    "stages": {s["stage"]: s["seconds"] for s in m["stages"]},
    "blocks_fetched": m["blocks_fetched"], "blocks_uploaded": m["blocks_uploaded"], "delta_blocks": m["delta_blocks"],
    "plan_blocks_fetched": (plan.get("source_reads") or {}).get("blocks_fetched"),
    "plan_files_bytes": edited,
}))
PY
        "$bin" -q cleanup --run-id "$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["run_id"])' "$work/migrate.json")" --yes >/dev/null 2>&1 || true
      done
    done
  done
done
stop_moto
printf '%-6s %-8s %11s %22s %8s %8s %6s\n' image layout concurrency "wall s (med min max)" fetched uploaded delta
"$python" - "$rows" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if '"migrate"' in l]
for key in sorted({(r["image"], r["layout"], r["concurrency"]) for r in rows}):
    rs = [r for r in rows if (r["image"], r["layout"], r["concurrency"]) == key]
    w = [r["wall_s"] for r in rs]
    print("%-6s %-8s %11d %8.1f %6.1f %6.1f %8d %8d %6s" % (*key, statistics.median(w), min(w), max(w),
          max(r["blocks_fetched"] for r in rs), max(r["blocks_uploaded"] for r in rs),
          max((r["delta_blocks"] or 0) for r in rs) if rs[0]["delta_blocks"] is not None else "-"))
PY
record ebs "$rows"
