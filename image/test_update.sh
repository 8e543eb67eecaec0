#!/bin/bash
# A/B update with rollback, under qemu, on the built x86-64 image (image/build.sh):
#   image/test_update.sh [--out DIR] [--accel auto|kvm|tcg] [--keep]
# 1. first boot with a registratura.yaml whose firstboot: ssh_keys holds a key made here; /healthz says
#    version V (the image's) from slot a;
# 2. a good update (the image's own bundle, VERSION 9000.0-good) goes in over SSH from a second virtual disk
#    (`registratura update apply /dev/vdb`): reboot -> the box runs 9000.0-good from slot b, and once /healthz
#    answers, systemd-bless-boot marks the entry good;
# 3. a broken update (VERSION 9001.0-bad: a root with no /sbin/init, from /dev/vdc) goes into slot a: reboot ->
#    systemd-boot tries it 3 times (the initramfs panics, panic=10 reboots), then boots 9000.0-good again;
#    `update status` calls 9001.0-bad "bad (fell back)".
# Prints PASS/FAIL lines and timings. Minutes under TCG; not part of the pytest suite.
# apt-get install qemu-system-x86 ovmf mtools fdisk squashfs-tools openssh-client curl python3
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/var/tmp}/registratura-image; accel=auto; keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --accel) accel=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
. "$here/qemu.sh"
SSH_HOST=22022; METRICS_HOST=29311
work="$out/update-test"
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
now() { date +%s; }
for tool in qemu-system-x86_64 mcopy sfdisk mksquashfs ssh ssh-keygen curl tar sha256sum; do
    command -v "$tool" >/dev/null || { echo "FAIL setup: $tool missing"; exit 1; }
done
image=$out/registratura-x86_64.raw
bundle=$(ls -t "$out"/registratura-x86_64-*.update.tar 2>/dev/null | head -1)
[ -f "$image" ] && [ -n "$bundle" ] || { echo "FAIL setup: no image and bundle in $out (run image/build.sh)"; exit 1; }
rm -rf "$work"; mkdir -p "$work/b"
cp --sparse=always "$image" "$work/disk.raw"

# ------------------------------------------------------------------------------------------------ bundles
# The good one: the image's own bundle under a newer version. The bad one: a root that boots no system.
make_bundle() {  # DIR VERSION OUT
    printf '%s\n' "$2" > "$1/VERSION"
    (cd "$1" && sha256sum VERSION root.img vmlinuz initrd.img cmdline > SHA256SUMS)
    tar -C "$1" -cf "$3" VERSION cmdline vmlinuz initrd.img root.img SHA256SUMS
}
tar -C "$work/b" -xf "$bundle"
make_bundle "$work/b" 9000.0-good "$work/good.tar"
mkdir -p "$work/empty/etc"; echo "not a system" > "$work/empty/etc/README"
rm -f "$work/b/root.img"; mksquashfs "$work/empty" "$work/b/root.img" -quiet -noappend >/dev/null
make_bundle "$work/b" 9001.0-bad "$work/bad.tar"
rm -rf "$work/b" "$work/empty"
pass "bundles: good.tar ($(du -h "$work/good.tar" | cut -f1)), bad.tar ($(du -h "$work/bad.tar" | cut -f1))"

# --------------------------------------------------------------------------------------- first-boot file
ssh-keygen -q -t ed25519 -N "" -f "$work/key" -C update-test
cat > "$work/registratura.yaml" <<EOF
firstboot:
  hostname: reg-update-test
  network: {dhcp: true}
  ssh_keys:
    - $(cat "$work/key.pub")
clinic: {name: "Тестовая клиника", region: RU, language: ru}
sip: {listen: "0.0.0.0:5060", allow_from: ["10.0.2.2/32"]}
data_dir: /var/lib/registratura
flows: {dir: ivr_flows, main: clinic_ru}
metrics: {listen: "0.0.0.0:9310", allow_from: ["10.0.2.2/32"]}
EOF
esp_off=$(sfdisk -J "$work/disk.raw" | python3 -c "import json,sys; p=json.load(sys.stdin)['partitiontable']['partitions'][0]; print(p['start']*512)")
export MTOOLS_SKIP_CHECK=1
mcopy -o -i "$work/disk.raw@@$esp_off" "$work/registratura.yaml" ::/registratura/registratura.yaml \
    || { echo "FAIL setup: mcopy"; exit 1; }

# -------------------------------------------------------------------------------------------------- boot
pick_accel "$work" "$accel"
cp "$OVMF_VARS" "$work/vars.fd"
# No -no-reboot: the guest reboots into the update and back. The bundles are disks vdb and vdc.
# shellcheck disable=SC2086
qemu-system-x86_64 $cpu -m 2048 -smp 2 -display none -nographic \
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE" \
    -drive if=pflash,format=raw,unit=1,file="$work/vars.fd" \
    -drive if=virtio,format=raw,file="$work/disk.raw" \
    -drive if=virtio,format=raw,readonly=on,file="$work/good.tar" \
    -drive if=virtio,format=raw,readonly=on,file="$work/bad.tar" \
    -device i6300esb -device virtio-rng-pci \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_HOST-:22,hostfwd=tcp:127.0.0.1:$METRICS_HOST-:9310" \
    -device virtio-net-pci,netdev=n0 \
    -serial file:"$work/serial.log" -monitor unix:"$work/monitor.sock",server,nowait > "$work/qemu.out" 2>&1 &
qemu=$!
trap 'kill $qemu 2>/dev/null' EXIT
echo "INFO qemu pid $qemu, serial log $work/serial.log"
limit=$([ "$accel" = kvm ] && echo 240 || echo 900)
guest() { ssh -p "$SSH_HOST" -i "$work/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
              -o ConnectTimeout=10 -o LogLevel=ERROR root@127.0.0.1 "$@"; }
healthy() {  # wait for /healthz 200 (up to $limit s); prints the image part of it
    local t0; t0=$(now)
    while kill -0 "$qemu" 2>/dev/null && [ $(( $(now) - t0 )) -lt "$limit" ]; do
        if curl -sf -m 3 -o "$work/healthz.json" "http://127.0.0.1:$METRICS_HOST/healthz"; then
            python3 -c "import json; i=json.load(open('$work/healthz.json'))['image']; print(i['version'], i['slot'], i['on_trial'])"
            echo "INFO /healthz 200 after $(( $(now) - t0 )) s" >&2
            return 0
        fi
        sleep 3
    done
    return 1
}
entry_state() {  # VERSION -> its state in `update status --json`
    guest /opt/registratura/venv/bin/registratura update status --json 2>/dev/null \
        | python3 -c "import json,sys; print(next((e['state'] for e in json.load(sys.stdin)['entries'] if e['version'] == '$1'), 'none'))"
}
reboot_guest() {
    local lines; lines=$(wc -l < "$work/serial.log")
    guest systemctl reboot
    # Wait until the old system is gone (the health port stops answering) before polling the new one.
    for _ in $(seq 1 60); do curl -sf -m 2 -o /dev/null "http://127.0.0.1:$METRICS_HOST/healthz" || break; sleep 2; done
    echo "$lines"
}

t0=$(now)
if state=$(healthy); then
    read -r v1 slot trial <<< "$state"
    [ "$slot" = a ] && [ "$trial" = False ] && pass "first boot: version $v1 from slot a, not on trial ($(( $(now) - t0 )) s)" \
        || fail "first boot: /healthz image says '$state', want slot a, not on trial"
else
    fail "first boot: no /healthz 200 within $limit s"; tail -20 "$work/serial.log"; exit 1
fi
guest true && pass "ssh: the key from firstboot: ssh_keys logs in as root" || { fail "ssh: no login with the key"; exit 1; }
mid=$(guest cat /etc/machine-id)

# ----------------------------------------------------------------------------------------- good update
t0=$(now)
if guest /opt/registratura/venv/bin/registratura update apply /dev/vdb > "$work/apply-good.txt" 2>&1; then
    pass "update apply (good): $(tail -1 "$work/apply-good.txt" | cut -c1-120) ($(( $(now) - t0 )) s)"
else
    fail "update apply (good): $(tail -3 "$work/apply-good.txt")"
fi
[ "$(entry_state 9000.0-good)" = "on trial (3 tries left)" ] && pass "entry 9000.0-good on trial with 3 tries" \
    || fail "entry 9000.0-good: $(entry_state 9000.0-good)"
reboot_guest > /dev/null
t0=$(now)
if state=$(healthy); then
    read -r v slot trial <<< "$state"
    [ "$v" = 9000.0-good ] && [ "$slot" = b ] && pass "after reboot: 9000.0-good from slot b ($(( $(now) - t0 )) s; on trial: $trial)" \
        || fail "after reboot: /healthz image says '$state', want 9000.0-good from slot b"
else
    fail "after reboot: no /healthz 200"
fi
[ "$(guest cat /etc/machine-id)" = "$mid" ] && pass "machine id $mid kept across the reboot (registratura-machine-id.service)" \
    || fail "machine id changed across the reboot: $mid -> $(guest cat /etc/machine-id)"
prev=$(guest journalctl -b -1 -q -u registratura-firstboot -o cat 2>/dev/null | grep -c "settings applied")
[ "${prev:-0}" -ge 1 ] && pass "journalctl -b -1 shows the previous boot (first boot's 'settings applied')" \
    || fail "journalctl -b -1 does not show the previous boot"
blessed=""
for _ in $(seq 1 40); do
    st=$(entry_state 9000.0-good); [ "$st" = good ] && { blessed=1; break; }; sleep 3
done
[ -n "$blessed" ] && pass "9000.0-good marked good once /healthz answered (systemd-bless-boot)" \
    || fail "9000.0-good not marked good: $st; $(guest systemctl status --no-pager registratura-update-check systemd-bless-boot 2>&1 | tail -15)"
[ "$(entry_state "$v1")" = good ] && pass "the first version $v1 (slot a) is still installed, good" \
    || fail "the first version's entry: $(entry_state "$v1")"

# ------------------------------------------------------------------------------------- broken update
if guest /opt/registratura/venv/bin/registratura update apply /dev/vdc > "$work/apply-bad.txt" 2>&1; then
    pass "update apply (broken root): into slot a, replacing $v1 ($(grep -c removing "$work/apply-bad.txt") entry removed)"
else
    fail "update apply (broken root): $(tail -3 "$work/apply-bad.txt")"
fi
lines=$(reboot_guest)
t0=$(now)
if state=$(healthy); then
    read -r v slot trial <<< "$state"
    tries=$(tail -n +"$lines" "$work/serial.log" | grep -ac "Rebooting automatically due to panic= boot argument")
    [ "$v" = 9000.0-good ] && [ "$slot" = b ] && pass "rollback: 9001.0-bad failed $tries boot(s), the box runs 9000.0-good from slot b again ($(( $(now) - t0 )) s)" \
        || fail "rollback: /healthz image says '$state' after $tries failed boot(s)"
    [ "$tries" -ge 3 ] && pass "systemd-boot tried the broken version 3 times" || fail "broken version tried $tries times, want 3"
else
    fail "rollback: no /healthz 200 within $limit s"; tail -30 "$work/serial.log"
fi
[ "$(entry_state 9001.0-bad)" = "bad (fell back)" ] && pass "update status: 9001.0-bad is 'bad (fell back)'" \
    || fail "update status: 9001.0-bad is '$(entry_state 9001.0-bad)'"
guest /opt/registratura/venv/bin/registratura update status > "$work/status.txt" 2>&1 && sed 's/^/INFO /' "$work/status.txt"
[ "$(guest cat /etc/machine-id)" = "$mid" ] && pass "machine id still $mid after the fallback" \
    || fail "machine id changed after the fallback"

qemu_monitor "$work/monitor.sock" system_powerdown 2>/dev/null
for _ in $(seq 1 120); do kill -0 "$qemu" 2>/dev/null || break; sleep 1; done
trap - EXIT; kill "$qemu" 2>/dev/null
[ "$keep" = 1 ] || rm -f "$work/disk.raw" "$work/good.tar" "$work/bad.tar"
if [ "$fails" = 0 ]; then echo "PASS image/test_update.sh: update, bless, broken update, rollback"; exit 0; fi
echo "FAIL image/test_update.sh: $fails check(s) failed (work directory $work)"; exit 1
