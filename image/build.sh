#!/bin/sh
# Build the Registratura x86-64 appliance image with mkosi 14 (Debian 12) on a networked Debian 12 x86-64
# machine. Usage:
#   image/build.sh [--out DIR] [--pjsua2-wheel DIR] [--summary]   # --summary: stage + `mkosi summary`, no build
# Steps: (1) the box's own pjsua2 wheel (tools/build_pjsua2.sh, 256 calls) unless --pjsua2-wheel gives one,
# (2) a wheelhouse of the app and its dependencies (pip wheel), (3) a staging copy of image/mkosi with the
# units, firewall, first-boot script and sources in mkosi.extra/, (4) mkosi build (root, ~10-20 min).
# The output (OUT/registratura-x86_64.raw, OUT default /var/tmp/registratura-image) is written to an SSD/SD card with dd or bmaptool; see image/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out="${TMPDIR:-/var/tmp}/registratura-image"   # outside the repo: the sources are copied from it
pj=""
summary=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --pjsua2-wheel) pj=$2; shift 2 ;;
        --summary) summary=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v mkosi >/dev/null || { echo "mkosi missing: apt-get install mkosi" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || echo "warning: host is $(uname -m); the wheels must match the image (x86_64)" >&2

stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage"
cp -a "$here/mkosi" "$stage/mkosi"
extra="$stage/mkosi/mkosi.extra"
app="$extra/opt/registratura"
mkdir -p "$app/wheels" "$app/bin" "$extra/etc/systemd/system" "$extra/etc/nftables.d"

# Sources (tracked and new files, not ignored ones) for flows, voices, example settings, first-boot script.
mkdir -p "$app/src"
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 tar -c --no-recursion) | tar -x -C "$app/src"
cp "$repo/README.md" "$app/README.md"
cp "$repo"/systemd/*.service "$repo"/systemd/*.timer "$extra/etc/systemd/system/"
cp "$repo/image/nftables/registratura.nft" "$extra/etc/nftables.d/registratura.nft.example"

if [ "$summary" = 1 ]; then
    cd "$stage/mkosi" && exec mkosi summary
fi

py=$(command -v python3.11 || command -v python3)
if [ -z "$pj" ]; then
    pj="$out/pjsua2"
    "$repo/tools/build_pjsua2.sh" --python "$py" --out "$pj"
fi
cp "$pj"/*.whl "$app/wheels/"
[ -f "$pj/BUILD-INFO" ] && cp "$pj/BUILD-INFO" "$app/wheels/BUILD-INFO"
"$py" -m pip wheel --wheel-dir "$app/wheels" "$repo"
# The PyPI pjsua2-python (4 calls, x86_64 only) must not end up in the image.
rm -f "$app/wheels"/pjsua2_python-*.whl

cd "$stage/mkosi"
mkdir -p mkosi.output
mkosi --force build
mv mkosi.output/* "$out/"
echo "image: $out/registratura-x86_64.raw"
