#!/bin/sh
# Build the Registratura x86-64 appliance image with mkosi 14 (Debian 12) on a networked Debian 12 x86-64
# machine. Usage:
#   image/build.sh [--out DIR] [--pjsua2-wheel DIR] [--models-dir DIR] [--summary]
#   --summary: stage + `mkosi summary`, no build. --models-dir: speech models fetched beforehand on this networked
#   machine (`registratura models fetch --models-dir DIR t-one-ru piper-ru-irina ...`), copied into the image's
#   /var/lib/registratura/models and verified there against models/manifest.yaml (a mismatch fails the build);
#   the prompts are rendered at build time with the voices the box will pick.
# Steps: (1) the box's own pjsua2 wheel (tools/build_pjsua2.sh, 256 calls) unless --pjsua2-wheel gives one,
# (2) a wheelhouse of the app and its dependencies (pip wheel), (3) a staging copy of image/mkosi with the
# units, firewall, first-boot script and sources in mkosi.extra/, (4) mkosi build of the root tree (Debian
# bookworm, packages, mkosi.postinst), (5) image/assemble.sh: the GPT disk (ESP + squashfs root + /var).
# Needs root (mkosi, systemd-nspawn); no loop device or vfat mount (works in a container).
# The output (OUT/registratura-x86_64.raw, OUT default /var/tmp/registratura-image) is written to an SSD/SD card with dd or bmaptool; see image/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out="${TMPDIR:-/var/tmp}/registratura-image"   # outside the repo: the sources are copied from it
pj=""
models=""
summary=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --pjsua2-wheel) pj=$2; shift 2 ;;
        --models-dir) models=$(cd "$2" && pwd); shift 2 ;;
        --summary) summary=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v mkosi >/dev/null || { echo "mkosi missing: apt-get install mkosi systemd-container" >&2; exit 1; }
start=$(date +%s)
[ "$(uname -m)" = x86_64 ] || echo "warning: host is $(uname -m); the wheels must match the image (x86_64)" >&2

stage="$out/stage"
. "$here/common.sh"
stage_mkosi "$repo" "$stage"   # image/mkosi copy + units, firewall, first-boot script, sources in mkosi.extra/
extra="$stage/mkosi/mkosi.extra"
app="$extra/opt/registratura"
if [ -n "$models" ]; then
    mkdir -p "$extra/var/lib/registratura/models"
    cp -a "$models"/. "$extra/var/lib/registratura/models/"
    echo "models: $(ls "$models" | tr '\n' ' ')from $models"
fi

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
"$py" -m pip wheel --wheel-dir "$app/wheels" "$repo[speech]"
"$py" -m pip download --no-deps --dest "$app/wheels" "$SILERO_VAD_WHEEL"
# The PyPI pjsua2-python (4 calls, x86_64 only) must not end up in the image.
rm -f "$app/wheels"/pjsua2_python-*.whl

nspawn_prepare   # common.sh: --nspawn-keep-unit and a tmpfs on /run/systemd/nspawn in a container
cd "$stage/mkosi"
mkdir -p mkosi.output
t0=$(date +%s)
mkosi --force $nspawn_keep build
t1=$(date +%s)
cp mkosi.output/root.manifest "$out/registratura-x86_64.manifest.json"
cp mkosi.output/root/opt/registratura/IMAGE-INFO.json "$out/IMAGE-INFO.json"
"$here/assemble.sh" mkosi.output/root "$out/registratura-x86_64.raw"
rm -rf mkosi.output/root   # the tree (≈1 GB) is in the image now
t2=$(date +%s)
echo "image: $out/registratura-x86_64.raw"
echo "build seconds: total $((t2 - start)) (mkosi tree $((t1 - t0)), disk $((t2 - t1)))" | tee "$out/build-seconds.txt"
