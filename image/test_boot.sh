#!/bin/bash
# Boot the built image under qemu (headless) and call it from the host with sipp.
#   image/test_boot.sh [--arch x86_64|arm64] [--build] [--pjsua2-wheel DIR] [--image RAW] [--out DIR]
#                      [--accel auto|kvm|tcg] [--keep] [--bad-settings] [--grow SIZE|0]
# x86_64 (default): UEFI/OVMF; --build runs image/build.sh first (timed), else the image in
# /var/tmp/registratura-image is used. arm64: the Raspberry Pi image of image/build_arm64.sh
# (/var/tmp/registratura-arm64) on qemu's `virt` machine (TCG, cortex-a72): the kernel, initramfs and
# cmdline.txt are read off its FAT partition, so the Pi firmware and config.txt are not exercised.
# An image without pjsua2 (arm64 built without the wheel) must come up in safe mode saying E302; the call is
# then skipped (SKIP line) and the rest checked.
# Steps: copy the image (sparse) to a work directory, put a test registratura.yaml into the ESP's
# registratura/ folder with mtools (no mount), boot with user-mode networking and host port forwards
# (SIP udp 25060 -> 5060, metrics tcp 29310 -> 9310, RTP udp 24000-24009 on both sides), wait for /healthz,
# scrape /metrics, place one sipp call (INVITE/200/ACK, audio + DTMF '1', BYE/200), check the box counted
# it, power the VM off through ACPI and read the guest's journal off the /var partition (debugfs, no mount).
# --bad-settings: the technician's file has an error (sip.max_calls: lots): first boot must reject it (console,
# registratura.yaml.rejected + .txt on the FAT partition) and the box must come up in safe mode, its /healthz
# answering the host 503 with the file:line error; no call is placed.
# --grow SIZE (default 2G): the copy is made SIZE larger than the image; /var's partition and ext4 must fill it
# after the boot (read off the disk after power-off): systemd-repart on x86 (GPT), growpart on the Pi (MBR).
# Prints PASS/FAIL lines and the timings. Not part of the pytest suite (minutes). Needs root only with --build.
# apt-get install qemu-system-x86 ovmf sip-tester mtools e2fsprogs curl python3
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=""; arch=x86_64
image=""; build=0; pj=""; accel=auto; keep=0; bad=0; grow=2G
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --build) build=1; shift ;;
        --pjsua2-wheel) pj=$2; shift 2 ;;
        --image) image=$2; shift 2 ;;
        --accel) accel=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --bad-settings) bad=1; shift ;;
        --grow) grow=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$arch" in
    x86_64) out=${out:-${TMPDIR:-/var/tmp}/registratura-image}; qemu_bin=qemu-system-x86_64
            builder=build.sh; default_image=registratura-x86_64.raw; qemu_pkg=qemu-system-x86 ;;
    arm64)  out=${out:-${TMPDIR:-/var/tmp}/registratura-arm64}; qemu_bin=qemu-system-aarch64
            builder=build_arm64.sh; default_image=registratura-arm64.img; qemu_pkg=qemu-system-arm; accel=tcg ;;
    *) echo "--arch: x86_64 or arm64" >&2; exit 2 ;;
esac
SIP_HOST=25060; METRICS_HOST=29310; SIPP_MEDIA=26000
# The box's RTP range is 512 ports (256 calls, so the SIP stack's real capacity shows); the box takes ports
# from the start of the range, so forwarding the first 10 covers this test's call.
RTP_MIN=24000; RTP_MAX=24511; RTP_FWD_MAX=24009
work="$out/boot-test"
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

for tool in "$qemu_bin" sipp mcopy debugfs curl sfdisk; do
    command -v "$tool" >/dev/null || { echo "FAIL setup: $tool missing (apt-get install $qemu_pkg ovmf sip-tester mtools e2fsprogs curl fdisk)"; exit 1; }
done

# ------------------------------------------------------------------------------------------------ build
if [ "$build" = 1 ]; then
    t0=$(now)
    if "$here/$builder" ${pj:+--pjsua2-wheel "$pj"} --out "$out" > "$out.build.log" 2>&1; then
        pass "build: $(secs "$t0" "$(now)") s (log $out.build.log)"
    else
        tail -30 "$out.build.log"; echo "FAIL build (log $out.build.log)"; exit 1
    fi
fi
image=${image:-$out/$default_image}
[ -f "$image" ] || { echo "FAIL setup: no image at $image (run with --build)"; exit 1; }
[ -f "$out/build-seconds.txt" ] && [ "$build" = 0 ] && echo "INFO image built $(date -r "$image" '+%F %T'): $(cat "$out/build-seconds.txt")"

rm -rf "$work"; mkdir -p "$work"
cp --sparse=always "$image" "$work/disk.raw"

# ------------------------------------------------------------------------------------ first-boot files
# Offsets from the partition table: 1 = ESP or the Pi's /boot/firmware (FAT); /var (ext4) is 4 on x86 (after
# the root slots a and b) and 3 on the Pi.
part() { sfdisk -J "$work/disk.raw" | python3 -c "import json,sys; p=json.load(sys.stdin)['partitiontable']['partitions'][$1-1]; print(p['start']*512, p['size']*512)"; }
var_part=$([ "$arch" = arm64 ] && echo 3 || echo 4)
# A disk larger than the image, as a real card or SSD is: /var must grow into it (--grow 0 to skip).
image_var_bytes=""
if [ "$grow" != 0 ]; then
    read -r _ image_var_bytes < <(part "$var_part")
    truncate -s "+$grow" "$work/disk.raw"
fi
read -r esp_off _ < <(part 1)
read -r var_off var_size < <(part "$var_part")
cat > "$work/registratura.yaml" <<EOF
# Test settings for image/test_boot.sh: the qemu host (10.0.2.2 in user-mode networking) is the gateway.
firstboot:
  hostname: reg-qemu-test
  network: {dhcp: true}
  timezone: Europe/Moscow
clinic: {name: "Тестовая клиника", region: RU, language: ru}
sip:
  listen: "0.0.0.0:5060"
  public_address: "127.0.0.1"      # the SDP the host sees: RTP goes to the host's forwarded ports
  allow_from: ["10.0.2.2/32"]
  rtp_ports: "$RTP_MIN-$RTP_MAX"
  max_calls: 256
data_dir: /var/lib/registratura
flows: {dir: ivr_flows, main: clinic_ru}
metrics: {listen: "0.0.0.0:9310", allow_from: ["10.0.2.2/32"]}
EOF
[ "$bad" = 1 ] && sed -i 's/^  max_calls: 256$/  max_calls: lots/' "$work/registratura.yaml"
export MTOOLS_SKIP_CHECK=1
# First boot reads the ESP's registratura/ folder on x86 and the root of the FAT partition on the Pi.
fat_dir=$([ "$arch" = arm64 ] && echo "::" || echo "::/registratura")
if mcopy -o -i "$work/disk.raw@@$esp_off" "$work/registratura.yaml" "$fat_dir/registratura.yaml"; then
    pass "first-boot file: registratura.yaml copied into the ESP (offset $esp_off)"
else
    echo "FAIL first-boot file: mcopy"; exit 1
fi

# ----------------------------------------------------------------------------------------- accelerator
. "$here/qemu.sh"
code=$OVMF_CODE; vars=$OVMF_VARS
[ "$arch" = arm64 ] || [ -f "$code" ] || { echo "FAIL setup: $code missing (apt-get install ovmf)"; exit 1; }
if [ "$arch" = arm64 ]; then accel=tcg; echo "INFO accelerator: tcg"; else pick_accel "$work" "$accel"; fi

# -------------------------------------------------------------------------------------------------- boot
fwd="hostfwd=udp:127.0.0.1:$SIP_HOST-:5060,hostfwd=tcp:127.0.0.1:$METRICS_HOST-:9310"
for p in $(seq "$RTP_MIN" "$RTP_FWD_MAX"); do fwd="$fwd,hostfwd=udp:127.0.0.1:$p-:$p"; done
t_boot=$(now)
if [ "$arch" = arm64 ]; then
    # What the Pi firmware would load: config.txt names the kernel and initramfs; cmdline.txt the root.
    mcopy -n -i "$work/disk.raw@@$esp_off" ::/config.txt ::/cmdline.txt "$work/"
    kernel=$(sed -n 's/^kernel=//p' "$work/config.txt"); initrd=$(awk '$1 == "initramfs" {print $2}' "$work/config.txt")
    mcopy -n -i "$work/disk.raw@@$esp_off" "::/$kernel" "::/$initrd" "$work/" \
        || { echo "FAIL setup: $kernel / $initrd not on the FAT partition"; exit 1; }
    # shellcheck disable=SC2086
    qemu-system-aarch64 -M virt -cpu cortex-a72 -accel tcg,thread=multi -m 2048 -smp 2 -no-reboot \
        -display none -nographic -kernel "$work/$kernel" -initrd "$work/$initrd" \
        -append "$(cat "$work/cmdline.txt") console=ttyAMA0" \
        -drive if=none,file="$work/disk.raw",format=raw,id=d0 -device virtio-blk-pci,drive=d0 \
        -device i6300esb -device virtio-rng-pci \
        -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0,romfile= \
        -serial file:"$work/serial.log" -monitor unix:"$work/monitor.sock",server,nowait \
        > "$work/qemu.out" 2>&1 &
else
    cp "$vars" "$work/vars.fd"
    # shellcheck disable=SC2086
    qemu-system-x86_64 $cpu -m 2048 -smp 2 -no-reboot -display none -nographic \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$code" \
        -drive if=pflash,format=raw,unit=1,file="$work/vars.fd" \
        -drive if=virtio,format=raw,file="$work/disk.raw" \
        -device i6300esb -device virtio-rng-pci \
        -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0 \
        -serial file:"$work/serial.log" -monitor unix:"$work/monitor.sock",server,nowait \
        > "$work/qemu.out" 2>&1 &
fi
qemu=$!
echo "INFO qemu pid $qemu, serial log $work/serial.log"
monitor() { qemu_monitor "$work/monitor.sock" "$1"; }
cleanup() { kill "$qemu" 2>/dev/null; }
trap cleanup EXIT

limit=$([ "$accel" = kvm ] && echo 180 || { [ "$arch" = arm64 ] && echo 1200 || echo 600; })
ready=""; nopj=0
while :; do
    if ! kill -0 "$qemu" 2>/dev/null; then tail -20 "$work/qemu.out"; break; fi
    code_h=$(curl -s -o "$work/healthz.json" -w '%{http_code}' -m 3 "http://127.0.0.1:$METRICS_HOST/healthz" || true)
    if [ "$bad" = 0 ] && [ "$code_h" = 200 ]; then ready=$(now); break; fi
    if [ "$bad" = 1 ] && [ "$code_h" = 503 ] && grep -q '"safe_mode": true' "$work/healthz.json"; then ready=$(now); break; fi
    # An arm64 image built without an arm64 pjsua2 wheel boots into safe mode saying so: no call to place.
    if [ "$bad" = 0 ] && [ "$code_h" = 503 ] && grep -q 'E302' "$work/healthz.json"; then nopj=1; ready=$(now); break; fi
    [ "$bad" = 0 ] && grep -q "SETTINGS REJECTED" "$work/serial.log" 2>/dev/null && { grep -a -A5 "SETTINGS REJECTED" "$work/serial.log"; break; }
    [ "$(secs "$t_boot" "$(now)" | cut -d. -f1)" -ge "$limit" ] && break
    sleep 2
done
if [ -n "$ready" ] && [ "$bad" = 1 ]; then
    pass "boot: safe mode, /healthz 503 after $(secs "$t_boot" "$ready") s from qemu start ($accel)"
elif [ -n "$ready" ] && [ "$nopj" = 1 ]; then
    pass "boot: /healthz 503 (safe mode, E302: this image has no pjsua2) after $(secs "$t_boot" "$ready") s from qemu start ($accel)"
    echo "SKIP call, metrics after it, SIP capacity: no pjsua2 in this image (build it with --pjsua2-wheel DIR)"
elif [ -n "$ready" ]; then
    pass "boot: /healthz 200 after $(secs "$t_boot" "$ready") s from qemu start ($accel): $(tr -d '\n' < "$work/healthz.json" | cut -c1-200)"
else
    fail "boot: no /healthz $([ "$bad" = 1 ] && echo '503 (safe mode)' || echo 200) within ${limit} s (last HTTP code ${code_h:-none}); serial log $work/serial.log"
fi
if [ "$bad" = 1 ]; then
    grep -aq "registratura-firstboot: SETTINGS REJECTED" "$work/serial.log" \
        && pass "first boot: '$(grep -a -m1 -A1 "SETTINGS REJECTED" "$work/serial.log" | tail -1 | tr -d '\r' | cut -c1-160)' on the console" \
        || fail "first boot: no 'SETTINGS REJECTED' on the console"
    # What a technician sees from the LAN: why the box takes no calls, naming the file and line.
    if python3 - "$work/healthz.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
fb = h.get("firstboot") or {}
assert h.get("safe_mode") is True and h.get("ok") is False, h
assert fb.get("ok") is False and "registratura.yaml:" in fb.get("error", "") and "max_calls" in fb["error"], fb
print("PASS safe mode /healthz from the host: " + fb["error"].splitlines()[0][:160])
PY
    then :; else fail "safe mode /healthz: $(cut -c1-300 "$work/healthz.json")"; fi
else
    grep -aq "registratura-firstboot: settings applied" "$work/serial.log" && pass "first boot: settings applied (console)" \
        || fail "first boot: no 'settings applied' on the console"
fi

# ----------------------------------------------------------------------------------------- metrics + call
metric() { grep -E "^$1(\{| )" "$work/$2" | awk '{s += $NF} END {print s + 0}'; }
if [ -n "$ready" ] && [ "$bad" = 0 ] && [ "$nopj" = 0 ]; then
    if curl -sf -m 5 "http://127.0.0.1:$METRICS_HOST/metrics" > "$work/metrics.before"; then
        pass "metrics: $(grep -c '^registratura_' "$work/metrics.before") registratura_* samples"
    else
        fail "metrics: /metrics did not answer"
    fi
    # The gateway's call of tests/sip: sipp's SDP names 10.0.2.2 (the host as the guest sees it), so the
    # box's RTP reaches sipp's media port on the host's loopback.
    sed 's/c=IN IP\[media_ip_type\] \[media_ip\]/c=IN IP4 10.0.2.2/' "$repo/tests/sip/scenarios/uac_call.xml" > "$work/uac_call.xml"
    t_call=$(now)
    (cd "$work" && sipp "127.0.0.1:$SIP_HOST" -sf uac_call.xml -m 1 -i 127.0.0.1 -mi 127.0.0.1 -mp "$SIPP_MEDIA" \
        -p 0 -s clinic -timeout 60s -nostdin -trace_err -trace_msg -message_file sipp.messages > sipp.out 2>&1)
    rc=$?
    took=$(secs "$t_call" "$(now)")
    ok200=$(grep -c "^SIP/2.0 200" "$work/sipp.messages" 2>/dev/null)
    if [ "$rc" = 0 ] && [ "${ok200:-0}" -ge 2 ]; then
        pass "call: sipp INVITE -> 200 OK, ACK, audio + DTMF, BYE -> 200 OK in $took s (sipp exit 0)"
    else
        fail "call: sipp exit $rc, $ok200 '200' responses in $took s (see $work/sipp.out, sipp.messages)"
        tail -5 "$work/sipp.out"
    fi
    sleep 2
    curl -sf -m 5 "http://127.0.0.1:$METRICS_HOST/metrics" > "$work/metrics.after" || true
    calls=$(( $(metric registratura_calls_total metrics.after) - $(metric registratura_calls_total metrics.before) ))
    if [ "$calls" -ge 1 ] 2>/dev/null; then
        pass "metrics after the call: registratura_calls_total +$calls ($(grep -E '^registratura_calls_total' "$work/metrics.after" | tr '\n' ' ' | cut -c1-200))"
    else
        fail "metrics after the call: registratura_calls_total did not grow"
    fi
    digits=$(( $(metric registratura_dtmf_digits_total metrics.after) - $(metric registratura_dtmf_digits_total metrics.before) ))
    if [ "$digits" -ge 1 ] 2>/dev/null; then
        pass "RTP host -> guest: the box heard $digits DTMF digit(s) (registratura_dtmf_digits_total)"
    else
        fail "RTP host -> guest: no DTMF digit counted (registratura_dtmf_digits_total)"
    fi
    cap=$(metric registratura_sip_call_capacity metrics.after)
    if [ "$cap" -gt 4 ] 2>/dev/null; then pass "SIP stack: call capacity $cap (the box's own pjsua2, not the 4-call PyPI wheel)"
    else fail "SIP stack: call capacity $cap"; fi
fi

# ---------------------------------------------------------------------------------------------- power off
t_off=$(now)
monitor system_powerdown 2>/dev/null
for _ in $(seq 1 120); do kill -0 "$qemu" 2>/dev/null || break; sleep 1; done
if kill -0 "$qemu" 2>/dev/null; then
    fail "power off: still running 120 s after the ACPI power button"; monitor quit 2>/dev/null; sleep 2
else
    pass "power off: clean shutdown in $(secs "$t_off" "$(now)") s"
fi
trap - EXIT

# The guest's journal, read off its /var partition (persistent journal), for the record and for failures.
if [ -n "$image_var_bytes" ]; then  # /var grown at boot: partition (repart / growpart) and ext4 (x-systemd.growfs)
    read -r var_off var_size < <(part "$var_part")
    grown=$(( (var_size - image_var_bytes) / 1048576 ))
    if [ "$grown" -gt 0 ]; then pass "/var partition grown by $grown MiB into the larger disk (+$grow)"
    else fail "/var partition not grown (still $((var_size / 1048576)) MiB on a disk $grow larger)"; fi
fi
dd if="$work/disk.raw" of="$work/var.img" bs=1M skip=$((var_off / 1048576)) count=$((var_size / 1048576)) conv=sparse status=none
if [ -n "$image_var_bytes" ]; then
    fs_bytes=$(dumpe2fs -h "$work/var.img" 2>/dev/null | python3 -c "import sys; f=dict(l.split(':',1) for l in sys.stdin if ':' in l); print(int(f['Block count']) * int(f['Block size']))")
    # within 1 MiB: ext4 ends on a whole block group boundary or block; the image's own was exactly 8 GiB
    if [ "$fs_bytes" -gt "$image_var_bytes" ] && [ $((var_size - fs_bytes)) -lt 1048576 ]; then
        pass "/var ext4 grown with its partition: $((fs_bytes / 1048576)) MiB (was $((image_var_bytes / 1048576)))"
    else fail "/var ext4 is $((fs_bytes / 1048576)) MiB in a $((var_size / 1048576)) MiB partition"; fi
fi
rm -rf "$work/journal"; mkdir -p "$work/journal"
debugfs -R "rdump /log/journal $work/journal" "$work/var.img" >/dev/null 2>&1
journalctl -D "$work/journal/journal" --no-pager -o short-monotonic > "$work/journal.txt" 2>/dev/null
rm -f "$work/var.img"
echo "INFO guest journal: $work/journal.txt ($(wc -l < "$work/journal.txt") lines)"
journalctl -D "$work/journal/journal" --no-pager -p err -o short-monotonic 2>/dev/null | grep -v "^-- " | head -20 | sed 's/^/INFO guest error: /'
journalctl -D "$work/journal/journal" --no-pager -o cat -u registratura-firstboot 2>/dev/null | head -5 | sed 's/^/INFO firstboot: /'
# What the boot did, from the guest's journal: read-only root, /var, firewall, watchdogs, no failed units.
jcheck() { if grep -Eq "$2" "$work/journal.txt"; then pass "guest: $1"; else fail "guest: $1 (not in the journal: $2)"; fi; }
jcheck "/var partition mounted (ext4)" "Mounted var.mount"
if [ "$arch" = arm64 ]; then
    jcheck "FAT boot partition mounted at /boot/firmware" "Mounted boot-firmware.mount"
    [ -n "$image_var_bytes" ] && jcheck "/var partition grown by growpart before the mount" "/var partition grown: CHANGED: partition=3"
else
    jcheck "ESP mounted at /efi" "Mounted efi.mount"
fi
jcheck "nftables rules rendered from the settings and loaded" "Finished registratura-firewall.service"
jcheck "hardware watchdog armed by systemd" "[Uu]sing hardware watchdog"
if [ "$bad" = 1 ]; then
    jcheck "service up in safe mode (no SIP), saying why" "SAFE MODE: the box takes no calls"
elif [ "$nopj" = 1 ]; then
    jcheck "service up in safe mode, saying pjsua2 is not installed" "E302"
else
    jcheck "service ready (sd_notify) with the box's own SIP stack" "SIP stack: pjsua2 [0-9.]+ \(appliance build\)|Started registratura.service"
    jcheck "speech: the Silero VAD loaded" "VAD: Silero"
    jcheck "speech: the bundled ru-commands recogniser loaded" "ASR: ru-commands.*spoken menu choices enabled"
fi
failed=$(grep -E "Failed to start|Failed with result" "$work/journal.txt" | sed -E 's/.*Failed to start ([^ ]+).*/\1/; s/.*: ([^ :]+): Failed with result.*/\1/' | sort -u | tr '\n' ' ')
# A rejected first-boot file fails its unit on purpose (systemctl --failed shows it to the technician).
[ "$bad" = 1 ] && failed=$(echo "$failed" | tr ' ' '\n' | grep -v '^registratura-firstboot.service$' | grep -v '^Registratura$' | tr '\n' ' ' | sed 's/ *$//')
if [ -z "$failed" ]; then pass "guest: no unit failed"; else fail "guest: units failed: $failed"; fi

# First boot renamed the technician's file on the FAT partition.
mdir -b -i "$work/disk.raw@@$esp_off" "$fat_dir" > "$work/fat.txt" 2>/dev/null
if [ "$bad" = 1 ]; then
    if grep -q "registratura.yaml.rejected$" "$work/fat.txt" && grep -q "registratura.yaml.rejected.txt" "$work/fat.txt"; then
        pass "FAT: registratura.yaml renamed registratura.yaml.rejected, the reasons in registratura.yaml.rejected.txt"
    else
        fail "FAT: no registratura.yaml.rejected(.txt): $(tr '\n' ' ' < "$work/fat.txt")"
    fi
elif grep -q "registratura.yaml.applied" "$work/fat.txt"; then
    pass "FAT: registratura.yaml renamed registratura.yaml.applied"
else
    fail "FAT: no registratura.yaml.applied"
fi
[ "$keep" = 1 ] || rm -f "$work/disk.raw"
if [ "$fails" = 0 ] && [ "$bad" = 1 ]; then echo "PASS image/test_boot.sh --bad-settings: rejected at first boot, safe mode says why"; exit 0; fi
if [ "$fails" = 0 ] && [ "$nopj" = 1 ]; then echo "PASS image/test_boot.sh (no pjsua2 in this image): the image boots and says why it takes no calls"; exit 0; fi
if [ "$fails" = 0 ]; then echo "PASS image/test_boot.sh: the image boots, serves /metrics and takes a SIP call"; exit 0; fi
echo "FAIL image/test_boot.sh: $fails check(s) failed (work directory $work)"; exit 1
