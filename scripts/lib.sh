# Shared by scripts/*: host setup, cache locations and fixture building. Source it.
set -euo pipefail

PV2HVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PV2HVM_CACHE=${PV2HVM_CACHE:-/var/cache/pv2hvm}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PV2HVM_CACHE/target}

# Debian packages: build (libext2fs-dev, pkg-config), run (GRUB, e2fsprogs), --boot-check
# (QEMU, SeaBIOS), fixtures (mmdebstrap) and tests (xfsprogs, btrfs-progs, fdisk, cpio, kmod, tmux,
# the host decompressors for every initramfs format,
# and the guests' own initramfs listing tools from initramfs-tools-core and dracut-core).
PV2HVM_PACKAGES=(
  libext2fs-dev comerr-dev pkg-config gcc
  grub-pc-bin grub-common e2fsprogs
  qemu-system-x86 seabios
  mmdebstrap ca-certificates
  xfsprogs btrfs-progs fdisk cpio kmod xz-utils lz4 zstd bzip2 tmux
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

# The versions bookworm/main offers now of the packages that shape the fixtures, as the host's
# apt lists (the same release) see them; mmdebstrap builds from bookworm/main alone, without
# the security or updates suites. Part of the fixture key: a new kernel or initramfs generator
# there builds new fixtures.
fixture_package_versions() {
  apt-cache madison linux-image-cloud-amd64 linux-image-amd64 initramfs-tools dracut systemd 2>/dev/null |
    awk -F'|' '$3 ~ / bookworm\/main / { gsub(/ /, "", $1); gsub(/ /, "", $2); print $1, $2 }'
}

# Prints the path of a cached fixture image, building it first when its builder or the
# packages it is built from changed. The versions it was built with go to stderr.
#   fixture cloud
fixture() {
  local flavour=$1
  local builder=$PV2HVM_ROOT/tests/fixtures/build-debian12-pv.sh
  local key
  key=$( { cat "$builder"; fixture_package_versions; } | sha256sum | cut -c1-12)
  local out=$PV2HVM_CACHE/fixtures/debian12-$flavour-$key.img
  if [ ! -f "$out" ]; then
    mkdir -p "$PV2HVM_CACHE/fixtures"
    echo "building fixture debian12-$flavour (one time, cached in $PV2HVM_CACHE/fixtures)" >&2
    bash "$builder" "$flavour" "$out" >&2
  fi
  if [ -f "$out.versions" ]; then
    echo "fixture debian12-$flavour: $(tr '\n' ' ' <"$out.versions")" >&2
  fi
  echo "$out"
}

# Prints the Python of a venv made from the requirements file REQ, cached in $PV2HVM_CACHE as
# venv-NAME-<hash of REQ and the host Python>, making it first when REQ changed.
#   cached_venv NAME REQ
cached_venv() {
  local name=$1 req=$2
  local key
  key=$( { cat "$req"; python3 --version; } | sha256sum | cut -c1-12)
  local venv=$PV2HVM_CACHE/venv-$name-$key
  if [ ! -x "$venv/bin/python" ]; then
    echo "making the $name venv (one time, cached in $venv)" >&2
    # A venv's scripts name its own directory, so it is made in place; a failed install is
    # removed whole.
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2 || { rm -rf "$venv"; exit 1; }
  fi
  echo "$venv/bin/python"
}

# The Python of the moto venv for the AWS tests (tests/aws/requirements.txt).
moto_python() {
  cached_venv moto "$PV2HVM_ROOT/tests/aws/requirements.txt"
}

# The Python of the deploy-check venv (tests/deploy-requirements.txt: kubernetes-validate,
# botocore).
deploy_python() {
  cached_venv deploy "$PV2HVM_ROOT/tests/deploy-requirements.txt"
}

# Prints the path of a cached benchmark image: the cloud fixture grown to 20 GiB with DATA_GIB
# (default 8) GiB of random data (tests/fixtures/grow-with-data.sh), rebuilt when the fixture or
# the script changes. With 0, the same filesystem without the data.
big_fixture() {
  local data=${1:-8} base grower key out
  base=$(fixture cloud)
  grower=$PV2HVM_ROOT/tests/fixtures/grow-with-data.sh
  key=$( { cat "$grower"; basename "$base"; } | sha256sum | cut -c1-12)
  out=$PV2HVM_CACHE/fixtures/bench-cloud-20g-$key.img
  [ "$data" = 8 ] || out=$PV2HVM_CACHE/fixtures/bench-cloud-20g-${data}g-data-$key.img
  if [ ! -f "$out" ]; then
    echo "building a 20 GiB benchmark image with $data GiB of data (one time, cached in $PV2HVM_CACHE/fixtures)" >&2
    bash "$grower" "$base" "$out" 20 "$data" >&2
  fi
  echo "$out"
}
