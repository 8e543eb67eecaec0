# Shared by image/build.sh (x86-64) and image/build_arm64.sh (Raspberry Pi); sourced, not run:
#   . image/common.sh; stage_mkosi REPO STAGE; nspawn_prepare
# stage_mkosi copies image/mkosi to STAGE/mkosi and fills its mkosi.extra/ (the repository stays clean): the
# sources (tracked and new files, not ignored ones: flows, voices, example settings, first-boot script), the
# systemd units of systemd/, the default firewall rules. The wheelhouse (opt/registratura/wheels) is the
# caller's: its wheels depend on the architecture.
# SPEECH_WHEELS: the app is wheeled with its speech extra (sherpa-onnx, onnxruntime, kaldi-native-fbank, numpy);
# the Silero VAD's model comes in the silero-vad package, which names torch as a dependency the box never
# imports: it is fetched on its own (--no-deps), and mkosi.postinst installs the wheelhouse --no-deps anyway.
# nspawn_prepare sets $nspawn_keep and mounts what systemd-nspawn (mkosi runs apt and mkosi.postinst through
# it) needs on a host not booted with systemd (a container).

SILERO_VAD_WHEEL='silero-vad==6.2.3'   # the same pin as tools/dev

stage_mkosi() {
    _repo=$1; _stage=$2
    rm -rf "$_stage"
    mkdir -p "$_stage"
    cp -a "$_repo/image/mkosi" "$_stage/mkosi"
    _extra="$_stage/mkosi/mkosi.extra"
    _app="$_extra/opt/registratura"
    mkdir -p "$_app/wheels" "$_app/bin" "$_extra/etc/systemd/system" "$_extra/etc/nftables.d"
    mkdir -p "$_app/src"
    (cd "$_repo" && git ls-files -co --exclude-standard -z | xargs -0 tar -c --no-recursion) | tar -x -C "$_app/src"
    cp "$_repo/README.md" "$_app/README.md"
    # The image's version (IMAGE-INFO.json image_version, the boot entry's, an update bundle's): build time in
    # UTC, so a newer build sorts after an older one, and the commit it was built from.
    printf '%s\n' "${IMAGE_VERSION:-$(date -u +%Y.%m.%d.%H%M)-$(cd "$_repo" && git rev-parse --short HEAD 2>/dev/null || echo local)}" \
        > "$_app/IMAGE-VERSION"
    cp "$_repo"/systemd/*.service "$_repo"/systemd/*.timer "$_extra/etc/systemd/system/"
    mkdir -p "$_extra/etc/initramfs-tools"
    cp "$_repo/image/nftables/registratura.nft" "$_extra/etc/nftables.d/registratura.nft.example"
}

# systemd-nspawn outside a systemd-booted host: no system bus to register a scope (--nspawn-keep-unit), and
# it refuses to clean up its propagation directory unless that is on tmpfs (containers often have /run on
# the overlay).
nspawn_prepare() {
    nspawn_keep=""
    [ -d /run/systemd/system ] || nspawn_keep="--nspawn-keep-unit"
    if [ "$(stat -f -c %T /run 2>/dev/null)" != tmpfs ] && ! mountpoint -q /run/systemd/nspawn 2>/dev/null; then
        mkdir -p /run/systemd/nspawn && mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
    fi
}
