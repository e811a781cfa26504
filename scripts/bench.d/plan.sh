# scripts/bench plan: what `plan` reads, locally and through EBS, on the 2 GiB fixture and
# on the 20 GiB image. Counts, not times: one run each. Sourced by scripts/bench.
rows=$work/plan.jsonl
: >"$rows"
start_moto
printf '%-6s %-6s %12s %9s %14s %9s %6s\n' image path "bytes read" requests "read again" "EBS blocks" files
for image in ${PV2HVM_BENCH_IMAGES:-cloud big}; do
  if [ "$image" = big ]; then src=$(big_fixture); else src=$(fixture "$image"); fi
  echo "uploading $(basename "$src") to the local server" >&2
  snap=$("$python" tests/aws/tool.py fleet-seed "$src" 0 --name "plan-$image" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["snapshot"])')
  for path in local ebs; do
    if [ "$path" = local ]; then from=$src; else from=$snap; fi
    "$bin" -q plan --format json "$from" >"$work/plan.json"
    "$python" - "$work/plan.json" "$image" "$path" "$(basename "$src")" >>"$rows" <<'PY'
import json, sys
plan, image, path, source = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
r = plan["source_reads"]
print(json.dumps({
    "image": image, "path": path, "source": source,
    "bytes_read": r["bytes"], "requests": r["requests"], "read_again_bytes": r["bytes"] - r["distinct_bytes"],
    "ebs_blocks_fetched": r.get("blocks_fetched"),
    "files_read": plan["files_read"],
}))
PY
    tail -n 1 "$rows" | "$python" -c '
import json, sys
r = json.load(sys.stdin)
print("%-6s %-6s %12d %9d %14d %9s %6d" % (r["image"], r["path"], r["bytes_read"], r["requests"], r["read_again_bytes"],
      r["ebs_blocks_fetched"] if r["ebs_blocks_fetched"] is not None else "-", len(r["files_read"])))'
  done
done
stop_moto
echo "files read (the same on every image and path):"
head -n 1 "$rows" | "$python" -c '
import json, sys
for f in json.load(sys.stdin)["files_read"]:
    print("  %9d  %-70s %s" % (f["bytes"], f["path"], f["why"]))'
record plan "$rows"
