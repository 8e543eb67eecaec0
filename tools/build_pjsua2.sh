#!/usr/bin/env bash
# build_pjsua2.sh - build pjproject's SWIG Python binding (pjsua2) as a wheel
# with the Registratura appliance configuration.
#
# Why this exists: the PyPI wheel `pjsua2-python` is compiled with
# PJSUA_MAX_CALLS=4 (pjproject's default), so whatever `uaConfig.maxCalls`
# asks, the 5th concurrent INVITE gets 486 Busy. Call capacity is a
# compile-time property of pjproject, so the box builds its own pjsua2 with
# enough call slots, an epoll ioqueue (select() stops at FD_SETSIZE=1024 fds)
# and conference ports / players / recorders sized for those calls.
# See issue 2 ("The pjsua2 we can get") and shared/ARCHITECTURE.md.
#
# The result is `pjsua2-<ver>-<pytag>-linux_<arch>.whl` (x86_64 or aarch64:
# the script builds natively for the machine it runs on; no cross-compiling)
# plus a BUILD-INFO file beside it. Before it says "done", the script installs
# the wheel into a throwaway venv and measures the real capacity through the
# C function pjsua_call_get_max_count().
#
# Nothing is written outside the build dir (default: a fresh temp dir) and the
# output dir; a --source tree is copied, never built in place.

set -euo pipefail

# ---------------------------------------------------------------- pinned source
PJ_VERSION="2.16"
PJ_URL="https://github.com/pjsip/pjproject/archive/refs/tags/${PJ_VERSION}.tar.gz"
# UNVERIFIED PIN. These values could not be checked against the real download
# (the machine that wrote this script had no internet). They were computed from
# `git archive --format=tar.gz --prefix=pjproject-2.16/ 2.16` of a mirror of
# github.com/pjsip/pjproject, made with git 2.39.5:
#   PJ_SHA256     - sha256 of that .tar.gz (GitHub may gzip differently, so
#                   the real download may well NOT match this one);
#   PJ_TAR_SHA256 - sha256 of the *decompressed* tar stream (independent of
#                   gzip settings; much more likely to match GitHub's file);
#   PJ_COMMIT     - the commit of tag 2.16 that git archive records in the tar
#                   header (`git get-tar-commit-id`); informational only.
# A tarball is accepted if its sha256 equals PJ_SHA256 or its decompressed tar
# equals PJ_TAR_SHA256. On the first online build, confirm the download against
# upstream, then replace PJ_SHA256 with the real value and delete this note.
PJ_SHA256="da6d93e1fc2b0d73e6991824fad9345eb3b15e9a53b04065896fb8ffff1a42c0"
PJ_TAR_SHA256="5729eff10478f7803744eebc3fd6c66e57430ba508e9c5bb8dc1c3c77402c80a"
PJ_COMMIT="6cab30cec44af36ba7c8a45ff7af2f74a8ed288c"

# Oldest pjproject we accept: AudioMediaPort (live audio frames for VAD/ASR)
# appeared in 2.14.
PJ_MIN_MAJOR=2
PJ_MIN_MINOR=14

# ---------------------------------------------------------------- defaults
MAX_CALLS=256
MIN_MAX_CALLS=128       # below this the box is not worth building for
MAX_MAX_CALLS=4096      # sanity bound: per-call arrays are allocated up front
OUT_DIR="./dist/pjsua2"
PYTHON="python3"
TARBALL=""
SOURCE_DIR=""
SHA_OVERRIDE=""
NO_VERIFY=0
BUILD_DIR=""
KEEP_BUILD=0
WITH_TLS=0
JOBS="$(nproc 2>/dev/null || echo 2)"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Build pjproject ${PJ_VERSION}'s pjsua2 Python binding as a wheel for this machine's
architecture (x86_64 or aarch64), configured for the Registratura appliance,
then measure its real call capacity in a throwaway venv.

Source (default: download the pinned release tarball and check its sha256):
  --tarball PATH     use a local pjproject tarball (sha256 checked unless --no-verify)
  --source DIR       use an unpacked pjproject tree (copied; the tree stays clean)
  --sha256 HASH      expected sha256 of the tarball (overrides the pinned value)
  --no-verify        do not check the tarball's sha256 (not recommended)

Build:
  --max-calls N      PJSUA_MAX_CALLS, concurrent call slots (default ${MAX_CALLS}, >= ${MIN_MAX_CALLS})
  --with-tls         also build OpenSSL TLS (SIP over TLS) and SRTP; needs libssl-dev,
                     and the wheel then needs libssl3 at run time (default: off)
  --python PATH      Python to build for and test with (default: python3)
  --jobs N           parallel make jobs (default: nproc = ${JOBS})
  --build-dir DIR    where to unpack and compile (default: a new temp dir under
                     \${TMPDIR:-/tmp}, removed after success unless --keep-build)
  --keep-build       keep the temp build dir after success

Output:
  --out DIR          where the wheel and BUILD-INFO go (default: ${OUT_DIR})
  -h, --help         this help

Needs (Debian): apt-get install build-essential swig python3-dev python3-venv
                (libssl-dev too with --with-tls); curl or wget to download.

Example (offline):
  $(basename "$0") --tarball /srv/pjproject-${PJ_VERSION}.tar.gz --sha256 <hash> --out /srv/dist
EOF
}

die() { printf 'build_pjsua2: error: %s\n' "$*" >&2; exit 1; }
note() { printf '==> %s\n' "$*"; }
warn() { printf 'build_pjsua2: warning: %s\n' "$*" >&2; }

need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value (see --help)"; }

# ---------------------------------------------------------------- arguments
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tarball)    need_arg "$@"; TARBALL="$2"; shift 2 ;;
        --source)     need_arg "$@"; SOURCE_DIR="$2"; shift 2 ;;
        --sha256)     need_arg "$@"; SHA_OVERRIDE="$2"; shift 2 ;;
        --no-verify)  NO_VERIFY=1; shift ;;
        --max-calls)  need_arg "$@"; MAX_CALLS="$2"; shift 2 ;;
        --with-tls)   WITH_TLS=1; shift ;;
        --python)     need_arg "$@"; PYTHON="$2"; shift 2 ;;
        --jobs|-j)    need_arg "$@"; JOBS="$2"; shift 2 ;;
        --build-dir)  need_arg "$@"; BUILD_DIR="$2"; shift 2 ;;
        --keep-build) KEEP_BUILD=1; shift ;;
        --out)        need_arg "$@"; OUT_DIR="$2"; shift 2 ;;
        -h|--help)    usage; exit 0 ;;
        *)            usage >&2; die "unknown option: $1" ;;
    esac
done

[[ -n "$TARBALL" && -n "$SOURCE_DIR" ]] && die "--tarball and --source are exclusive"
[[ "$MAX_CALLS" =~ ^[0-9]+$ ]] || die "--max-calls must be a whole number, got '$MAX_CALLS'"
(( MAX_CALLS >= MIN_MAX_CALLS )) \
    || die "--max-calls must be >= $MIN_MAX_CALLS (the appliance target), got $MAX_CALLS"
(( MAX_CALLS <= MAX_MAX_CALLS )) || die "--max-calls must be <= $MAX_MAX_CALLS, got $MAX_CALLS"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, got '$JOBS'"
if [[ -n "$SHA_OVERRIDE" ]]; then
    SHA_OVERRIDE="${SHA_OVERRIDE,,}"
    [[ "$SHA_OVERRIDE" =~ ^[0-9a-f]{64}$ ]] || die "--sha256 must be 64 hex digits"
fi
if [[ -n "$SOURCE_DIR" ]]; then
    [[ -d "$SOURCE_DIR" ]] || die "--source: no such directory: $SOURCE_DIR"
    [[ -f "$SOURCE_DIR/version.mak" && -d "$SOURCE_DIR/pjsip-apps/src/swig/python" ]] \
        || die "--source: $SOURCE_DIR does not look like a pjproject tree (no version.mak / pjsip-apps/src/swig/python)"
    SOURCE_DIR="$(cd "$SOURCE_DIR" && pwd)"
fi
if [[ -n "$TARBALL" ]]; then
    [[ -f "$TARBALL" ]] || die "--tarball: no such file: $TARBALL"
    TARBALL="$(cd "$(dirname "$TARBALL")" && pwd)/$(basename "$TARBALL")"
fi

ARCH="$(uname -m)"
case "$ARCH" in
    x86_64|aarch64) ;;
    *) warn "untested architecture '$ARCH' (x86_64 and aarch64 are the targets); trying anyway" ;;
esac

# Sizing derived from the call count. Each call holds 2 sockets (RTP, RTCP);
# SIP transports, TCP connections and the pjmedia endpoint share the same
# ioqueue limit, so give 4 handles per call with a floor of 1024. Each call may
# have a stream port plus a prompt player, a recorder and a live-audio
# AudioMediaPort in the conference bridge: 4 conference ports per call.
IOQ_HANDLES=$(( MAX_CALLS * 4 > 1024 ? MAX_CALLS * 4 : 1024 ))
CONF_PORTS=$(( MAX_CALLS * 4 ))
PLAYERS=$(( MAX_CALLS * 4 ))
RECORDERS=$(( MAX_CALLS * 4 ))

# ---------------------------------------------------------------- preflight
# Check everything before spending minutes compiling, and say what to install.
preflight() {
    local missing_tools=() apt=()
    command -v cc   >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing_tools+=(cc)
    command -v c++  >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing_tools+=(c++)
    command -v make >/dev/null 2>&1 || missing_tools+=(make)
    ((${#missing_tools[@]})) && apt+=(build-essential)
    if ! command -v swig >/dev/null 2>&1; then missing_tools+=(swig); apt+=(swig); fi
    for t in tar gzip sha256sum patch; do
        command -v "$t" >/dev/null 2>&1 || missing_tools+=("$t")
    done
    if [[ -z "$TARBALL" && -z "$SOURCE_DIR" ]] \
        && ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
        missing_tools+=(curl); apt+=(curl)
    fi

    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        die "Python not found: $PYTHON (use --python PATH)"
    fi
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
        || die "$PYTHON is older than Python 3.8"
    local pyinc
    pyinc="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    if [[ ! -f "$pyinc/Python.h" ]]; then
        missing_tools+=("Python.h (in $pyinc)")
        apt+=(python3-dev)
    fi
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing_tools+=("python venv/ensurepip")
        apt+=(python3-venv)
    fi
    if (( WITH_TLS )) && [[ ! -f /usr/include/openssl/ssl.h ]]; then
        missing_tools+=("openssl headers"); apt+=(libssl-dev)
    fi

    if ((${#missing_tools[@]})); then
        printf 'build_pjsua2: missing: %s\n' "${missing_tools[*]}" >&2
        if ((${#apt[@]})); then
            printf 'build_pjsua2: on Debian/Ubuntu: apt-get install %s\n' "${apt[*]}" >&2
        fi
        printf 'build_pjsua2: (python3-dev/python3-venv only help for the system python; for %s\n' "$PYTHON" >&2
        printf 'build_pjsua2:  the headers must be those of that interpreter)\n' >&2
        exit 1
    fi
}
preflight

# ---------------------------------------------------------------- build dir
TEMP_BUILD=0
if [[ -z "$BUILD_DIR" ]]; then
    BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/build_pjsua2.XXXXXX")"
    TEMP_BUILD=1
else
    mkdir -p "$BUILD_DIR"
    BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
fi
[[ "$OUT_DIR" == /* ]] || OUT_DIR="$PWD/$OUT_DIR"   # created once there is a wheel
LOG_DIR="$BUILD_DIR/logs"
SRC="$BUILD_DIR/src"
# Only the subdirectories this script creates are ever removed.
rm -rf "$SRC" "$LOG_DIR" "$BUILD_DIR/wheel" "$BUILD_DIR/venv-build" "$BUILD_DIR/venv-check"
mkdir -p "$SRC" "$LOG_DIR" "$BUILD_DIR/wheel"

STEP="start"
on_exit() {
    local rc=$?
    if (( rc != 0 )); then
        printf '\nbuild_pjsua2: FAILED during: %s (exit %d)\n' "$STEP" "$rc" >&2
        printf 'build_pjsua2: logs and build tree kept in %s\n' "$BUILD_DIR" >&2
    elif (( TEMP_BUILD && ! KEEP_BUILD )); then
        rm -rf "$BUILD_DIR"
    fi
}
trap on_exit EXIT

# run_logged NAME CMD...: run a noisy command into logs/NAME.log; on failure
# show its tail so the reason is visible without digging.
run_logged() {
    local name="$1"; shift
    STEP="$name"
    note "$name (log: $LOG_DIR/$name.log)"
    if ! "$@" >"$LOG_DIR/$name.log" 2>&1; then
        printf '\n---- last lines of %s ----\n' "$LOG_DIR/$name.log" >&2
        tail -n 40 "$LOG_DIR/$name.log" >&2
        return 1
    fi
}

START_TIME=$SECONDS

# ---------------------------------------------------------------- source
# verify_tarball FILE: stop unless FILE matches the expected hash.
verify_tarball() {
    local file="$1" actual tar_actual
    STEP="verify sha256"
    actual="$(sha256sum "$file" | cut -d' ' -f1)"
    SRC_SHA256="$actual"
    if (( NO_VERIFY )); then
        warn "--no-verify: NOT checking $file (sha256 $actual)"
        return 0
    fi
    if [[ -n "$SHA_OVERRIDE" ]]; then
        [[ "$actual" == "$SHA_OVERRIDE" ]] || die "sha256 mismatch for $file
    expected (--sha256): $SHA_OVERRIDE
    actual:              $actual
  The tarball is not the one you meant; refusing to build from it."
        note "sha256 ok ($actual, as given by --sha256)"
        return 0
    fi
    if [[ "$actual" == "$PJ_SHA256" ]]; then
        note "sha256 ok ($actual, pinned PJ_SHA256)"
        return 0
    fi
    # GitHub and local git may gzip the same tar differently: fall back to the
    # hash of the decompressed tar stream.
    tar_actual="$(gzip -dc "$file" | sha256sum | cut -d' ' -f1)" || tar_actual="(not gzip)"
    if [[ "$tar_actual" == "$PJ_TAR_SHA256" ]]; then
        note "sha256 of decompressed tar ok ($tar_actual, pinned PJ_TAR_SHA256)"
        return 0
    fi
    die "sha256 mismatch for $file
    expected: $PJ_SHA256 (PJ_SHA256, pinned for pjproject $PJ_VERSION; UNVERIFIED pin, see the script)
          or: $PJ_TAR_SHA256 (PJ_TAR_SHA256, of the decompressed tar)
    actual:   $actual (decompressed tar: $tar_actual)
  If you have checked this tarball against upstream yourself, pass --sha256 $actual
  (and update PJ_SHA256 in $0); otherwise do not use it."
}

SRC_DESC=""
SRC_SHA256="-"
if [[ -n "$SOURCE_DIR" ]]; then
    STEP="copy source"
    note "copying source tree $SOURCE_DIR -> $SRC (without .git)"
    tar -C "$SOURCE_DIR" --exclude=.git -cf - . | tar -C "$SRC" -xf -
    SRC_DESC="source dir $SOURCE_DIR (not hash-checked)"
else
    if [[ -z "$TARBALL" ]]; then
        STEP="download"
        TARBALL="$BUILD_DIR/pjproject-${PJ_VERSION}.tar.gz"
        note "downloading $PJ_URL"
        if command -v curl >/dev/null 2>&1; then
            curl -fL --retry 3 -o "$TARBALL" "$PJ_URL" \
                || die "download failed: $PJ_URL (offline? use --tarball or --source)"
        else
            wget -O "$TARBALL" "$PJ_URL" \
                || die "download failed: $PJ_URL (offline? use --tarball or --source)"
        fi
        SRC_DESC="$PJ_URL"
    else
        SRC_DESC="tarball $TARBALL"
    fi
    verify_tarball "$TARBALL"
    STEP="unpack"
    note "unpacking $(basename "$TARBALL")"
    # Release and git-archive tarballs have one top dir (pjproject-X.Y/).
    tar -C "$SRC" --strip-components=1 -xf "$TARBALL"
    tar_commit="$( (gzip -dc "$TARBALL" 2>/dev/null | git get-tar-commit-id 2>/dev/null) || true)"
    if [[ -n "$tar_commit" && "$tar_commit" != "$PJ_COMMIT" && -z "$SHA_OVERRIDE" ]]; then
        warn "tarball commit $tar_commit is not tag $PJ_VERSION's $PJ_COMMIT"
    fi
fi

[[ -f "$SRC/version.mak" ]] || die "no version.mak in the unpacked source: not a pjproject tree?"
ver_field() { sed -n "s/^export PJ_VERSION_$1 *:*= *\([^ ]*\).*/\1/p" "$SRC/version.mak" | head -n1; }
V_MAJOR="$(ver_field MAJOR)"; V_MINOR="$(ver_field MINOR)"; V_REV="$(ver_field REV)"
V_SUFFIX="$(ver_field SUFFIX)"
SRC_VERSION="${V_MAJOR}.${V_MINOR}${V_REV:+.$V_REV}${V_SUFFIX}"
if [[ ! "$V_MAJOR" =~ ^[0-9]+$ || ! "$V_MINOR" =~ ^[0-9]+$ ]] \
    || (( V_MAJOR < PJ_MIN_MAJOR || (V_MAJOR == PJ_MIN_MAJOR && V_MINOR < PJ_MIN_MINOR) )); then
    die "pjproject $SRC_VERSION is too old: need >= $PJ_MIN_MAJOR.$PJ_MIN_MINOR (AudioMediaPort)"
fi
[[ "$SRC_VERSION" == "$PJ_VERSION" ]] \
    || warn "building pjproject $SRC_VERSION, not the pinned $PJ_VERSION"
note "pjproject $SRC_VERSION, max calls $MAX_CALLS, arch $ARCH, $JOBS jobs, build dir $BUILD_DIR"

# ---------------------------------------------------------------- patches
# Our own fixes for upstream bugs the call benchmark hit (each patch says why);
# applied in name order, and a patch that does not apply stops the build.
STEP="patches"
PATCHES=""
PATCH_DIR="$(cd "$(dirname "$0")" && pwd)/pjsua2-patches"
for p in "$PATCH_DIR"/*.patch; do
    [[ -f "$p" ]] || continue
    note "applying $(basename "$p")"
    patch -d "$SRC" -p1 --forward --batch <"$p" >"$LOG_DIR/patch-$(basename "$p").log" 2>&1 \
        || die "patch $(basename "$p") does not apply to pjproject $SRC_VERSION (log: $LOG_DIR/patch-$(basename "$p").log)"
    PATCHES="${PATCHES:+$PATCHES }$(basename "$p" .patch)"
done

# ---------------------------------------------------------------- config_site.h
# pjproject reads compile-time limits from pjlib/include/pj/config_site.h.
# Values that configure also sets (codecs, SRTP) are guarded with #ifndef so
# the -D flags configure adds always agree with this file.
STEP="config_site.h"
if (( WITH_TLS )); then SRTP=1; else SRTP=0; fi
cat >"$SRC/pjlib/include/pj/config_site.h" <<EOF
/* Generated by Registratura tools/build_pjsua2.sh: appliance build of
 * pjproject $SRC_VERSION for an offline SIP IVR with null audio. */

/* Concurrent calls. pjproject's default is 4 (what the PyPI wheel has). */
#define PJSUA_MAX_CALLS             $MAX_CALLS

/* Sockets: 2 per call (RTP+RTCP) plus SIP transports, all in one ioqueue.
 * The epoll ioqueue (configure --enable-epoll) has no FD_SETSIZE cap;
 * PJSIP_MAX_TRANSPORTS defaults to this value too. */
#define PJ_IOQUEUE_MAX_HANDLES      $IOQ_HANDLES

/* Conference bridge slots, file players and recorders: several per call
 * (stream, prompt player, recorder, live-audio AudioMediaPort). */
#define PJSUA_MAX_CONF_PORTS        $CONF_PORTS
#define PJSUA_MAX_PLAYERS           $PLAYERS
#define PJSUA_MAX_RECORDERS         $RECORDERS

/* SIP hash tables (sizes are 2^n-1): room for every call's dialog and its
 * transactions without long chains. */
#define PJSIP_MAX_DIALOG_COUNT      (4096-1)
#define PJSIP_MAX_TSX_COUNT         (8192-1)

/* Audio only, no sound card: the appliance uses audDevManager().setNullDev(). */
#define PJMEDIA_HAS_VIDEO           0

/* Codecs: G.711 (PCMA/PCMU) and G.722 only; configure disables the rest. */
#ifndef PJMEDIA_HAS_G711_CODEC
#  define PJMEDIA_HAS_G711_CODEC    1
#endif
#ifndef PJMEDIA_HAS_G722_CODEC
#  define PJMEDIA_HAS_G722_CODEC    1
#endif

/* SRTP: off by default (clinic LAN gateway/trunk, plain RTP; no OpenSSL
 * runtime dependency); on with --with-tls. */
#ifndef PJMEDIA_HAS_SRTP
#  define PJMEDIA_HAS_SRTP          $SRTP
#endif
EOF

# ---------------------------------------------------------------- configure + make
CONFIGURE_ARGS=(
    --enable-epoll          # select() ioqueue cannot go past 1024 fds
    --disable-sound         # null audio; no ALSA/PortAudio dependency
    --disable-video --disable-v4l2 --disable-sdl --disable-ffmpeg
    --disable-openh264 --disable-vpx --disable-libyuv
    --disable-speex-codec --disable-ilbc-codec --disable-gsm-codec
    --disable-g7221-codec --disable-l16-codec --disable-opus --disable-silk
    --disable-bcg729 --disable-lyra --disable-opencore-amr
    --disable-speex-aec --disable-libwebrtc   # no echo canceller: no acoustic path
    --disable-upnp
)
if (( WITH_TLS )); then
    CONFIGURE_ARGS+=(--with-ssl)
else
    CONFIGURE_ARGS+=(--disable-ssl --disable-libsrtp)
fi
# -fPIC: the static pj libraries are linked into the _pjsua2 shared module.
BUILD_CFLAGS="-O2 -fPIC"

cd "$SRC"
run_logged configure env CFLAGS="$BUILD_CFLAGS" CXXFLAGS="$BUILD_CFLAGS" \
    ./configure "${CONFIGURE_ARGS[@]}"
grep -q 'ioqueue.*epoll\|/dev/epoll' "$LOG_DIR/configure.log" \
    || warn "configure did not report the epoll ioqueue (see $LOG_DIR/configure.log)"
run_logged make-dep make -j"$JOBS" dep
run_logged make make -j"$JOBS"

# ---------------------------------------------------------------- wheel
# A private build venv, so the wheel build never touches the caller's env.
# setuptools >= 70.1 has bdist_wheel built in; older needs the `wheel` package.
STEP="build venv"
"$PYTHON" -m venv "$BUILD_DIR/venv-build"
BPY="$BUILD_DIR/venv-build/bin/python"
if ! "$BPY" -m pip install --quiet --upgrade "setuptools>=70.1" wheel >"$LOG_DIR/venv-build.log" 2>&1; then
    "$BPY" -c 'import setuptools, wheel' 2>/dev/null \
        || die "cannot install setuptools/wheel into the build venv (no package index?): see $LOG_DIR/venv-build.log"
    warn "could not upgrade setuptools/wheel; using the venv's own"
fi

PYDIR="$SRC/pjsip-apps/src/swig/python"
# Upstream's Makefile target runs swig with upstream's flags.
run_logged swig make -C "$PYDIR" pjsua2_wrap.cpp
# setup.py asks `make -f helper.mak` for the include/lib flags of the build
# above; PJDIR lets it find version.mak if pip builds out of tree.
# CFLAGS=-g0: the extension is otherwise compiled with the interpreter's own
# flags, which usually include -g: that puts ~27 MB of debug info in a wheel
# of ~2.5 MB. (The exported C symbols, which ctypes uses, are kept.)
cd "$PYDIR"
run_logged wheel env PJDIR="$SRC" CFLAGS="-g0" "$BPY" -m pip wheel --no-deps --no-build-isolation \
    --wheel-dir "$BUILD_DIR/wheel" .
shopt -s nullglob
wheels=("$BUILD_DIR"/wheel/pjsua2-*.whl)
shopt -u nullglob
(( ${#wheels[@]} == 1 )) || die "expected one pjsua2 wheel in $BUILD_DIR/wheel, found ${#wheels[@]}"
WHEEL_NAME="$(basename "${wheels[0]}")"
[[ "$WHEEL_NAME" == *"$ARCH"* ]] || warn "wheel name $WHEEL_NAME does not name the arch $ARCH"
mkdir -p "$OUT_DIR"
cp -f "${wheels[0]}" "$OUT_DIR/$WHEEL_NAME"
WHEEL="$OUT_DIR/$WHEEL_NAME"
BUILD_SECONDS=$(( SECONDS - START_TIME ))
note "wheel: $WHEEL (built in ${BUILD_SECONDS}s)"

# ---------------------------------------------------------------- measure
# Install into a throwaway venv and ask the C library, not the config, how many
# calls it will really carry: pjsua clamps uaConfig.maxCalls to PJSUA_MAX_CALLS
# and pjsua_call_get_max_count() returns the clamped value.
STEP="capacity check"
"$PYTHON" -m venv "$BUILD_DIR/venv-check"
CPY="$BUILD_DIR/venv-check/bin/python"
run_logged install-check "$CPY" -m pip install --no-index --no-deps "$WHEEL"
cd "$BUILD_DIR"   # not the swig dir: import the installed module, not the build copy
CHECK_OUT="$("$CPY" -c '
import ctypes, sys
import pjsua2 as pj
want = int(sys.argv[1])
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.maxCalls = want
cfg.logConfig.level = 1
cfg.logConfig.consoleLevel = 1
ep.libInit(cfg)
ep.audDevManager().setNullDev()
lib = ctypes.CDLL(pj._pjsua2.__file__)
lib.pjsua_call_get_max_count.restype = ctypes.c_uint
lib.pj_ioqueue_name.restype = ctypes.c_char_p
cap = lib.pjsua_call_get_max_count()
ioq = lib.pj_ioqueue_name().decode()
ver = ep.libVersion().full
ep.libDestroy()
print("capacity=%d ioqueue=%s version=%s" % (cap, ioq, ver))
' "$MAX_CALLS" 2>"$LOG_DIR/check.log")" || { cat "$LOG_DIR/check.log" >&2; die "the built wheel does not import/initialise"; }
CAPACITY="$(sed -n 's/.*capacity=\([0-9]*\).*/\1/p' <<<"$CHECK_OUT")"
IOQUEUE="$(sed -n 's/.*ioqueue=\([^ ]*\).*/\1/p' <<<"$CHECK_OUT")"
LIBVER="$(sed -n 's/.*version=\([^ ]*\).*/\1/p' <<<"$CHECK_OUT")"
[[ -n "$CAPACITY" ]] || die "capacity check printed nothing useful: $CHECK_OUT"

# Shared libraries the wheel needs at run time (the image must have them).
NEEDED="$(cd "$BUILD_DIR/venv-check" && find . -name '_pjsua2*.so' -exec readelf -d {} \; 2>/dev/null \
    | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')" || NEEDED="?"

STEP="BUILD-INFO"
cat >"$OUT_DIR/BUILD-INFO" <<EOF
wheel=$WHEEL_NAME
pjproject_version=$SRC_VERSION
library_version=$LIBVER
source=$SRC_DESC
patches=${PATCHES:-none}
source_sha256=$SRC_SHA256
max_calls=$MAX_CALLS
capacity_measured=$CAPACITY
ioqueue=$IOQUEUE
ioqueue_max_handles=$IOQ_HANDLES
conf_ports=$CONF_PORTS
players=$PLAYERS
recorders=$RECORDERS
tls_srtp=$WITH_TLS
arch=$ARCH
python=$("$CPY" -c 'import sys; print(sys.version.split()[0])')
swig=$(swig -version | sed -n 's/^SWIG Version //p')
needed_libs=${NEEDED% }
build_seconds=$BUILD_SECONDS
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

(( CAPACITY >= MAX_CALLS )) \
    || die "measured capacity $CAPACITY is below the requested $MAX_CALLS (see $OUT_DIR/BUILD-INFO)"
[[ "$IOQUEUE" == *epoll* ]] || warn "ioqueue is '$IOQUEUE', not epoll"

STEP="done"
note "done: pjsua2 $LIBVER, capacity $CAPACITY concurrent calls, ioqueue $IOQUEUE, arch $ARCH"
note "wheel:      $WHEEL"
note "build info: $OUT_DIR/BUILD-INFO"
note "install:    python -m pip install $WHEEL   (uninstall pjsua2-python first: both provide 'pjsua2')"
