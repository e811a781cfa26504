# scripts/bench rss: peak RSS and wall time of `convert` on every fixture and every hostile
# image (tests/fixtures/hostile.sh), against a target of 512 MiB each. Sourced by
# scripts/bench. A hostile image may be refused (its exit code is recorded); one image at a
# time, as each is a 2 GiB sparse copy.
runs=${PV2HVM_BENCH_RUNS:-3}
rows=$work/rss.jsonl
: >"$rows"
hostile_cases=$(sed -n 's/^#   \([a-z][a-z0-9-]*\) .*/\1/p' tests/fixtures/hostile.sh)
printf '%-18s %-8s %5s %24s %24s\n' image kind exit "wall s (med min max)" "peak RSS MiB (med min max)"
measure() { # name kind image
  local w=() r=() code e m
  for _ in $(seq "$runs"); do
    rm -f "$out/rss-dst.img" "$out/rss-dst.img.partial"
    code=0
    /usr/bin/time -f '%e %M' -o "$work/time" "$bin" -q convert "$3" "$out/rss-dst.img" >/dev/null 2>"$work/stderr" || code=$?
    read -r e m < <(tail -n 1 "$work/time")
    w+=("$e"); r+=("$(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }')")
  done
  rm -f "$out/rss-dst.img" "$out/rss-dst.img.partial"
  read -r wm wmin wmax < <(stats "${w[@]}")
  read -r rm_ rmin rmax < <(stats "${r[@]}")
  printf '%-18s %-8s %5s %8s %6s %6s %8s %6s %6s\n' "$1" "$2" "$code" "$wm" "$wmin" "$wmax" "$rm_" "$rmin" "$rmax"
  echo "{\"image\":\"$1\",\"kind\":\"$2\",\"exit\":$code,\"runs\":$runs,\"wall_s\":{\"median\":$wm,\"min\":$wmin,\"max\":$wmax},\"peak_rss_mib\":{\"median\":$rm_,\"min\":$rmin,\"max\":$rmax}}" >>"$rows"
}
for image in cloud generic generic-ext3; do
  measure "$image" fixture "$(fixture "$image")"
done
cloud=$(fixture cloud)
for c in $hostile_cases; do
  bash tests/fixtures/hostile.sh "$cloud" "$out/hostile" "$c" >&2
  measure "$c" hostile "$out/hostile/$c.img"
  rm -f "$out/hostile/$c.img"
done
record rss "$rows"
