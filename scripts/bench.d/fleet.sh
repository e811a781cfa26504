# scripts/bench fleet [N …]: `fleet discover` and `fleet plan` over N moto instances (default
# 100 1000): wall time and peak RSS, for flat memory and linear time. Sourced by scripts/bench.
runs=${PV2HVM_BENCH_RUNS:-3}
sizes=("${@:2}")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000)
rows=$work/fleet.jsonl
: >"$rows"
start_moto
ami=$("$python" tests/aws/tool.py fleet-seed "$(fixture cloud)" 0 | "$python" -c 'import json, sys; print(json.load(sys.stdin)["image"])')
have=0
printf '%-10s %8s %22s %22s\n' operation sources "wall s (median min max)" "peak RSS MiB (med min max)"
for n in "${sizes[@]}"; do
  "$python" tests/aws/tool.py add-instances "$ami" $((n - have)) >/dev/null
  have=$n
  for op in discover plan; do
    if [ "$op" = plan ]; then
      cmd=("$bin" -q fleet plan --concurrency 8 --work-dir "$work" -o "$work/plan.json")
    else
      cmd=("$bin" -q fleet discover --format json)
    fi
    cw=() cc=() cr=()
    for _ in $(seq "$runs"); do timed cw cc cr "${cmd[@]}"; done
    read -r w wmin wmax < <(stats "${cw[@]}")
    read -r r rmin rmax < <(stats "${cr[@]}")
    printf '%-10s %8s %8s %6s %6s %8s %6s %6s\n' "$op" "$n" "$w" "$wmin" "$wmax" "$r" "$rmin" "$rmax"
    echo "{\"operation\":\"$op\",\"sources\":$n,\"runs\":$runs,\"wall_s\":{\"median\":$w,\"min\":$wmin,\"max\":$wmax},\"peak_rss_mib\":{\"median\":$r,\"min\":$rmin,\"max\":$rmax}}" >>"$rows"
  done
done
stop_moto
record fleet "$rows"
