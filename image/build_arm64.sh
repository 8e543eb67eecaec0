#!/bin/sh
# Build the Registratura arm64 (Raspberry Pi 4) appliance image with mkosi 14 (Debian 12) on a networked
# Debian 12 x86-64 machine (arm64 binaries run through qemu-user-static) or an arm64 one. Usage:
#   image/build_arm64.sh [--out DIR] [--pjsua2-wheel DIR | --build-pjsua2 TARBALL [--pjsua2-sha256 HASH]
#                        [--pjsua2-only]]
#                        [--mirror URL] [--boot-size 256M] [--root-size 2G] [--var-size 8G]
#                        [--keep-tree] [--summary] [--dry-run]
#   --summary: stage + `mkosi summary` (no build); --dry-run: print the plan and boot files, nothing written;
#   --keep-tree: keep OUT/stage/mkosi/mkosi.output/root (for chroot checks under qemu-user)
#   --pjsua2-only: build the arm64 pjsua2 wheel into OUT/pjsua2 and stop (reuse it with --pjsua2-wheel)
# Steps: (1) a staging copy of image/mkosi (common.sh, as image/build.sh) with the arm64 drop-in
# image/arm64/mkosi.arm64.conf (linux-image-arm64, raspi-firmware), (2) an aarch64 wheelhouse: pure wheels
# built on this host, the others downloaded from PyPI as manylinux aarch64 cp311 wheels, (3) pjsua2: the
# arm64 wheel of tools/build_pjsua2.sh (--pjsua2-wheel), or built by it in an arm64 Debian chroot under
# qemu-user (--build-pjsua2: hours on an x86 host), or none: the image says "pjsua2: not installed" and its
# SIP service cannot start, (4) mkosi build of the arm64 root tree, /opt/registratura/BUILD-INFO,
# (5) image/assemble_pi.sh: the MBR disk (FAT /boot/firmware + squashfs root + ext4 /var).
# Needs root (mkosi, systemd-nspawn) and, on x86-64, qemu-user-static + binfmt-support; no loop device or
# vfat mount. Output: OUT/registratura-arm64.img (OUT default /var/tmp/registratura-arm64); see image/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out="${TMPDIR:-/var/tmp}/registratura-arm64"   # outside the repo: the sources are copied from it
pj=""; pj_tarball=""; pj_sha=""; mirror="http://deb.debian.org/debian"
summary=0; dry=0; sizes=""; keep_tree=0; pj_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --pjsua2-wheel) pj=$2; shift 2 ;;
        --build-pjsua2) pj_tarball=$2; shift 2 ;;
        --pjsua2-sha256) pj_sha=$2; shift 2 ;;
        --pjsua2-only) pj_only=1; shift ;;
        --mirror) mirror=$2; shift 2 ;;
        --boot-size|--root-size|--var-size) sizes="$sizes $1 $2"; shift 2 ;;
        --summary) summary=1; shift ;;
        --dry-run) dry=1; shift ;;
        --keep-tree) keep_tree=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -z "$pj" ] || [ -z "$pj_tarball" ] || { echo "--pjsua2-wheel and --build-pjsua2 are exclusive" >&2; exit 2; }
[ "$pj_only" = 0 ] || [ -n "$pj_tarball" ] || { echo "--pjsua2-only needs --build-pjsua2 TARBALL" >&2; exit 2; }
img="$out/registratura-arm64.img"
stage="$out/stage"
tree="$stage/mkosi/mkosi.output/root"

if [ -n "$pj" ]; then
    pj_plan="arm64 wheel from $pj (tools/build_pjsua2.sh on an arm64 host; its BUILD-INFO goes into the image)"
elif [ -n "$pj_tarball" ]; then
    pj_plan="built from $pj_tarball by tools/build_pjsua2.sh in an arm64 Debian chroot ($out/pjsua2-builder) under qemu-user"
else
    pj_plan="NOT INSTALLED: no arm64 pjsua2 on PyPI; build it with tools/build_pjsua2.sh on an arm64 host (a Pi, an arm64 VM) and pass --pjsua2-wheel DIR, or --build-pjsua2 TARBALL (under qemu-user, slow). BUILD-INFO says 'pjsua2: not installed'"
fi

if [ "$dry" = 1 ]; then
    cat <<EOF
registratura arm64 image build (dry run: nothing is built)
  host:        $(uname -m)$( [ "$(uname -m)" = aarch64 ] || echo ' (arm64 binaries through qemu-user-static binfmt)')
  output:      $img
  1 stage:     $stage/mkosi (image/mkosi + image/arm64/mkosi.arm64.conf as mkosi.default.d/arm64.conf)
  2 wheels:    aarch64 cp311 wheelhouse (pure wheels built here, manylinux aarch64 wheels from PyPI)
  3 pjsua2:    $pj_plan
  4 tree:      mkosi --architecture aarch64 build (Debian bookworm arm64, main + non-free-firmware, $mirror)
  5 disk:      image/assemble_pi.sh$sizes: MBR, 1 FAT32 /boot/firmware, 2 squashfs root (ro), 3 ext4 /var
EOF
    "$here/assemble_pi.sh" --print-boot-config --kernel "6.1.0-N-arm64"
    exit 0
fi

command -v mkosi >/dev/null || { echo "mkosi missing: apt-get install mkosi systemd-container debootstrap" >&2; exit 1; }
if [ "$(uname -m)" != aarch64 ]; then
    # flag F (qemu-user-static's handler is opened at registration): runs in nspawn/chroot without a copy.
    grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
        echo "no qemu-aarch64 binfmt handler: apt-get install qemu-user-static binfmt-support" >&2
        echo "(in a container: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)" >&2
        exit 1; }
fi
start=$(date +%s)

. "$here/common.sh"
stage_mkosi "$repo" "$stage"   # the same staging as image/build.sh
mkdir -p "$stage/mkosi/mkosi.default.d"
cp "$here/arm64/mkosi.arm64.conf" "$stage/mkosi/mkosi.default.d/arm64.conf"
app="$stage/mkosi/mkosi.extra/opt/registratura"

if [ "$summary" = 1 ]; then
    cd "$stage/mkosi" && exec mkosi --mirror "$mirror" summary
fi

# 2. The aarch64 wheelhouse, without emulation: resolve and build the app's dependencies for this host, keep
#    the pure (*-none-any) wheels, and take every binary one again from PyPI as a manylinux aarch64 wheel of
#    the same version. Any without an aarch64 wheel is named and the build stops.
py=$(command -v python3.11 || command -v python3)
hostw="$out/wheels-host"
rm -rf "$hostw"
t0=$(date +%s)
"$py" -m pip wheel --quiet --wheel-dir "$hostw" "$repo[speech]"
"$py" -m pip download --quiet --no-deps --dest "$hostw" "$SILERO_VAD_WHEEL"   # pure: copied as it is
missing=""
for w in "$hostw"/*.whl; do
    f=$(basename "$w"); name=${f%%-*}; rest=${f#*-}; ver=${rest%%-*}
    case "$name" in pjsua2_python) continue ;; esac   # the PyPI pjsua2 (4 calls, x86_64 only): never in the image
    case "$f" in *-none-any.whl) cp "$w" "$app/wheels/"; continue ;; esac
    plats=""
    for p in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35 manylinux_2_36; do
        plats="$plats --platform ${p}_aarch64"
    done
    # shellcheck disable=SC2086
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$app/wheels" $plats \
        --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "$name==$ver" \
        || missing="$missing $name==$ver"
done
[ -z "$missing" ] || { echo "no aarch64 cp311 wheel on PyPI for:$missing" >&2; exit 1; }
ls "$app/wheels" > "$out/wheels-aarch64.txt"
t1=$(date +%s)

# 3. pjsua2 for arm64.
if [ -n "$pj_tarball" ]; then
    # An arm64 Debian 12 build chroot (debootstrap through qemu-user), then tools/build_pjsua2.sh in it:
    # native arm64 compiler and Python, emulated. Kept in $out/pjsua2-builder for the next run.
    builder="$out/pjsua2-builder"
    if [ ! -x "$builder/usr/bin/swig" ]; then
        rm -rf "$builder"
        debootstrap --arch=arm64 --variant=minbase --merged-usr \
            --include=build-essential,swig,python3-dev,python3-venv,patch,ca-certificates bookworm "$builder" "$mirror"
    fi
    rm -rf "$builder/build"; mkdir -p "$builder/build"
    cp "$repo/tools/build_pjsua2.sh" "$builder/build/"
    cp -r "$repo/tools/pjsua2-patches" "$builder/build/"   # the script applies the patches beside it
    # Its build venv needs setuptools and wheel: pure wheels fetched here, so the chroot needs no package
    # index of its own (nor this host's pip configuration and certificates).
    "$py" -m pip download --quiet --only-binary=:all: --dest "$builder/build/wheels" "setuptools>=70.1" wheel
    cp "$pj_tarball" "$builder/build/pjproject.tar.gz"
    nspawn_prepare
    # shellcheck disable=SC2086
    systemd-nspawn --quiet ${nspawn_keep:+--keep-unit} --register=no -D "$builder" --chdir=/build \
        --setenv=PIP_NO_INDEX=1 --setenv=PIP_FIND_LINKS=/build/wheels \
        /bin/bash /build/build_pjsua2.sh --tarball /build/pjproject.tar.gz ${pj_sha:+--sha256 "$pj_sha"} \
        --python /usr/bin/python3 --out /build/dist
    pj="$builder/build/dist"
    if [ "$pj_only" = 1 ]; then
        rm -rf "$out/pjsua2"; cp -r "$pj" "$out/pjsua2"
        echo "pjsua2 for arm64: $(ls "$out"/pjsua2/*.whl) in $(( $(date +%s) - t1 )) s; reuse it with --pjsua2-wheel $out/pjsua2"
        exit 0
    fi
fi
if [ -n "$pj" ]; then
    ls "$pj"/pjsua2-*aarch64*.whl >/dev/null 2>&1 || { echo "no pjsua2-*aarch64*.whl in $pj" >&2; exit 1; }
    cp "$pj"/pjsua2-*aarch64*.whl "$app/wheels/"
    [ -f "$pj/BUILD-INFO" ] && cp "$pj/BUILD-INFO" "$app/wheels/BUILD-INFO"
else
    echo "warning: $pj_plan" >&2
    echo "pjsua2 not installed: see image/README.md (arm64)" > "$app/wheels/NO-PJSUA2"
fi
t2=$(date +%s)

# 4. The arm64 root tree.
nspawn_prepare   # common.sh: --nspawn-keep-unit and a tmpfs on /run/systemd/nspawn in a container
cd "$stage/mkosi"
mkdir -p mkosi.output
mkosi --force $nspawn_keep --mirror "$mirror" build
t3=$(date +%s)
cp mkosi.output/root.manifest "$out/registratura-arm64.manifest.json"
cp "$tree/opt/registratura/IMAGE-INFO.json" "$out/IMAGE-INFO.json"

# BUILD-INFO: what the box is, readable on the box and (a copy) on the FAT partition.
kver=$(ls "$tree/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
fwver=$(dpkg-query --admindir="$tree/var/lib/dpkg" -W -f '${Version}' raspi-firmware 2>/dev/null || echo unknown)
{
    echo "image=registratura-arm64"
    echo "board=raspberry-pi-4"
    echo "debian=$(cat "$tree/etc/debian_version")"
    echo "kernel=$kver"
    echo "raspi_firmware=$fwver"
    echo "registratura=$(sed -n 's/.*"registratura": "\([^"]*\)".*/\1/p' "$tree/opt/registratura/IMAGE-INFO.json")"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if [ -n "$pj" ]; then
        echo "pjsua2=installed"
        [ -f "$pj/BUILD-INFO" ] && sed -n 's/^\(pjproject_version\|max_calls\|capacity_measured\|ioqueue\|arch\)=/pjsua2_\1=/p' "$pj/BUILD-INFO"
    else
        echo "pjsua2: not installed (no arm64 pjsua2 wheel at build time: build it with tools/build_pjsua2.sh on an arm64 host; the SIP service cannot start)"
    fi
} > "$tree/opt/registratura/BUILD-INFO"
cp "$tree/opt/registratura/BUILD-INFO" "$out/BUILD-INFO"

# 5. The disk.
# shellcheck disable=SC2086
"$here/assemble_pi.sh" "$tree" "$img" $sizes
t4=$(date +%s)
[ "$keep_tree" = 1 ] || rm -rf "$tree"   # the tree (≈1 GB) is in the image now
echo "image: $img"
echo "build seconds: total $((t4 - start)) (wheels $((t1 - t0)), pjsua2 $((t2 - t1)), mkosi tree $((t3 - t2)), disk $((t4 - t3)))" \
    | tee "$out/build-seconds.txt"
