# scripts/bench local: convert against the durable copy. Sourced by scripts/bench.
runs=${PV2HVM_BENCH_RUNS:-5}
rows=$work/local.jsonl
: >"$rows"
printf '%-8s %-9s %24s %7s %8s %24s %6s\n' image mode "convert wall s (med min max)" "CPU s" "RSS MiB" "copy+sync s (med min max)" ratio
for image in ${PV2HVM_BENCH_IMAGES:-cloud generic big}; do
  if [ "$image" = big ]; then src=$(big_fixture); else src=$(fixture "$image"); fi
  for mode in default mbr gpt in-place; do
    cw=() cc=() cr=() bw=() bc=() br=()
    for _ in $(seq "$runs"); do
      rm -f "$out/copy.img" "$out/hvm.img" "$out/hvm.img.partial"; sync
      timed bw bc br sh -c 'cp --sparse=always "$1" "$2" && sync "$2"' sh "$src" "$out/copy.img"
      rm -f "$out/copy.img"; sync
      case $mode in
        default) timed cw cc cr "$bin" -q convert "$src" "$out/hvm.img" ;;
        mbr | gpt) timed cw cc cr "$bin" -q convert "$src" "$out/hvm.img" --layout "$mode" ;;
        in-place)
          # The copy to convert is made first, untimed, and left to settle.
          cp --sparse=always "$src" "$out/hvm.img"; sync
          timed cw cc cr "$bin" -q convert --in-place --no-undo "$out/hvm.img" ;;
      esac
    done
    rm -f "$out/hvm.img"
    read -r w wmin wmax < <(stats "${cw[@]}")
    read -r c _ _ < <(stats "${cc[@]}")
    read -r r rmin rmax < <(stats "${cr[@]}")
    read -r b bmin bmax < <(stats "${bw[@]}")
    ratio=$(awk -v a="$w" -v b="$b" 'BEGIN { printf "%.2f", a / b }')
    printf '%-8s %-9s %8s %6s %6s %7s %8s %8s %6s %6s %6s\n' "$image" "$mode" "$w" "$wmin" "$wmax" "$c" "$r" "$b" "$bmin" "$bmax" "$ratio"
    echo "{\"image\":\"$image\",\"source\":\"$(basename "$src")\",\"allocated_gib\":$(du -k "$src" | awk '{ printf "%.2f", $1 / 1048576 }'),\"mode\":\"$mode\",\"runs\":$runs,\"convert_wall_s\":{\"median\":$w,\"min\":$wmin,\"max\":$wmax},\"convert_cpu_s\":$c,\"peak_rss_mib\":{\"median\":$r,\"min\":$rmin,\"max\":$rmax},\"durable_copy_wall_s\":{\"median\":$b,\"min\":$bmin,\"max\":$bmax},\"ratio\":$ratio}" >>"$rows"
  done
done
record local "$rows"
