# Shared by scripts/*: host setup, cache locations and fixture building. Source it.
set -euo pipefail

PV2HVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PV2HVM_CACHE=${PV2HVM_CACHE:-/var/cache/pv2hvm}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PV2HVM_CACHE/target}

# Debian packages: build (libext2fs-dev, pkg-config), run (GRUB, e2fsprogs), --boot-check
# (QEMU, SeaBIOS), fixtures (mmdebstrap) and tests (xfsprogs, btrfs-progs, fdisk, cpio, kmod,
# and the guests' own initramfs listing tools from initramfs-tools-core and dracut-core).
PV2HVM_PACKAGES=(
  libext2fs-dev comerr-dev pkg-config gcc
  grub-pc-bin grub-common e2fsprogs
  qemu-system-x86 seabios
  mmdebstrap ca-certificates
  xfsprogs btrfs-progs fdisk cpio kmod xz-utils
  initramfs-tools-core dracut-core
)

# Installs whatever of PV2HVM_PACKAGES is missing (apt-get update first, as apt needs).
ensure_host_packages() {
  local missing=()
  for p in "${PV2HVM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
  command -v cargo >/dev/null || { echo "cargo is required (install Rust with rustup)" >&2; exit 1; }
}

# Prints the path of a cached fixture image, building it first when its builder changed.
#   fixture cloud
fixture() {
  local flavour=$1
  local builder=$PV2HVM_ROOT/tests/fixtures/build-debian12-pv.sh
  local key
  key=$(sha256sum "$builder" | cut -c1-12)
  local out=$PV2HVM_CACHE/fixtures/debian12-$flavour-$key.img
  if [ ! -f "$out" ]; then
    mkdir -p "$PV2HVM_CACHE/fixtures"
    echo "building fixture debian12-$flavour (one time, cached in $PV2HVM_CACHE/fixtures)" >&2
    bash "$builder" "$flavour" "$out" >&2
  fi
  echo "$out"
}
