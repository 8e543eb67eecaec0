#!/bin/bash
# Check the Raspberry Pi image that image/build_arm64.sh made, without a Pi and without mounts:
#   image/check_arm64.sh [OUT]     # OUT default /var/tmp/registratura-arm64 (registratura-arm64.img inside)
# Disk: the MBR (sfdisk), the FAT partition's files (mtools: firmware, config.txt, cmdline.txt naming this
# disk's root PARTUUID, kernel, initramfs, DTBs), the squashfs root (unsquashfs at the partition's offset:
# fstab, BUILD-INFO, the venv) and the ext4 /var (debugfs on a sparse copy).
# Tree (only with build_arm64.sh --keep-tree, OUT/stage/mkosi/mkosi.output/root): runs the arm64 programs in
# a chroot through qemu-user-static (binfmt): python's machine, `registratura --help`, imports of every
# dependency, `registratura check` of the example settings, the firewall render, and first boot on a
# scratch root (good settings applied, bad ones rejected). Prints PASS/FAIL lines; exit 1 on any FAIL.
set -u
out=${1:-/var/tmp/registratura-arm64}
img="$out/registratura-arm64.img"
tree="$out/stage/mkosi/mkosi.output/root"
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi; }
export MTOOLS_SKIP_CHECK=1
[ -f "$img" ] || { echo "no image $img (image/build_arm64.sh)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/check-arm64.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ------------------------------------------------------------------------------------ partition table
sfdisk -d "$img" > "$work/sfdisk.txt"
sfdisk -J "$img" > "$work/sfdisk.json"
py() { python3 -c "import json; t=json.load(open('$work/sfdisk.json'))['partitiontable']; $1"; }
[ "$(py 'print(t["label"])')" = dos ] && pass "MBR (dos) partition table" || fail "not an MBR disk"
disk_id=$(py 'print(t["id"][2:])')
[ "$(py 'print(" ".join(p["type"] for p in t["partitions"]))')" = "c 83 83" ] \
    && pass "partitions: 1 FAT32 LBA (c), 2 Linux (83), 3 Linux (83)" || fail "partition types"
[ "$(py 'print(t["partitions"][0].get("bootable", False))')" = True ] && pass "partition 1 active" || fail "partition 1 not active"
[ "$(py 'print(t["partitions"][0]["start"])')" = 2048 ] && pass "FAT at 1 MiB" || fail "FAT not at 1 MiB"
off() { py "p=t['partitions'][$1-1]; print(p['start']*512)"; }
size() { py "p=t['partitions'][$1-1]; print(p['size']*512)"; }
fat="$img@@$(off 1)"

# ------------------------------------------------------------------------------------ FAT /boot/firmware
mdir -b -i "$fat" ::/ > "$work/fat.txt" 2>&1 || fail "mdir on the FAT partition"
for f in start4.elf fixup4.dat bootcode.bin config.txt cmdline.txt bcm2711-rpi-4-b.dtb README.txt BUILD-INFO.txt; do
    grep -qi "^::/$f$" "$work/fat.txt" && pass "FAT: $f" || fail "FAT: no $f"
done
kernel=$(sed -n 's|^::/\(vmlinuz-.*\)$|\1|p' "$work/fat.txt" | head -1)
initrd=$(sed -n 's|^::/\(initrd.img-.*\)$|\1|p' "$work/fat.txt" | head -1)
[ -n "$kernel" ] && [ -n "$initrd" ] && pass "FAT: kernel $kernel, $initrd" || fail "FAT: kernel/initramfs missing"
mtype -i "$fat" ::/config.txt > "$work/config.txt"
mtype -i "$fat" ::/cmdline.txt > "$work/cmdline.txt"
for line in arm_64bit=1 dtparam=watchdog=on upstream_kernel=1 "kernel=$kernel" "initramfs $initrd followkernel"; do
    grep -qxF "$line" "$work/config.txt" && pass "config.txt: $line" || fail "config.txt: no '$line'"
done
grep -qw "root=PARTUUID=$disk_id-02" "$work/cmdline.txt" && pass "cmdline.txt: root=PARTUUID=$disk_id-02 (this disk)" \
    || fail "cmdline.txt root does not name this disk ($disk_id): $(cat "$work/cmdline.txt")"
grep -qw ro "$work/cmdline.txt" && grep -qw rootfstype=squashfs "$work/cmdline.txt" && pass "cmdline.txt: ro, squashfs" \
    || fail "cmdline.txt: not ro squashfs"
[ "$(wc -l < "$work/cmdline.txt")" = 1 ] && pass "cmdline.txt: one line" || fail "cmdline.txt: not one line"
echo "  FAT: $(mdir -i "$fat" ::/ 2>/dev/null | tail -2 | tr -s ' \n' ' ')"

# ------------------------------------------------------------------------------------ squashfs root
root_off=$(off 2)
if unsquashfs -o "$root_off" -s "$img" > "$work/sq.txt" 2>&1; then
    pass "partition 2 is a squashfs ($(sed -n 's/^Compression //p' "$work/sq.txt"))"
    unsquashfs -o "$root_off" -cat "$img" etc/fstab > "$work/fstab" 2>/dev/null
    grep -q "^PARTUUID=$disk_id-03  */var  *ext4" "$work/fstab" && pass "fstab: /var = PARTUUID=$disk_id-03" || fail "fstab: /var"
    grep -q "^PARTUUID=$disk_id-01  */boot/firmware  *vfat" "$work/fstab" && pass "fstab: /boot/firmware = PARTUUID=$disk_id-01" \
        || fail "fstab: /boot/firmware"
    # /var grows at boot: growpart on its partition first (the unit), then the ext4 (x-systemd.growfs).
    grep "^PARTUUID=$disk_id-03 " "$work/fstab" | grep -q "x-systemd.growfs,x-systemd.requires=registratura-growvar.service" \
        && pass "fstab: /var grows at boot (x-systemd.growfs after registratura-growvar.service)" || fail "fstab: /var growth options"
    unsquashfs -o "$root_off" -cat "$img" etc/systemd/system/registratura-growvar.service > "$work/growvar.service" 2>/dev/null
    grep -qxF "ExecStart=-/usr/lib/registratura/grow-var /dev/disk/by-partuuid/$disk_id-03" "$work/growvar.service" \
        && grep -qxF "Before=var.mount systemd-fsck@dev-disk-by\\x2dpartuuid-$disk_id\\x2d03.service shutdown.target" "$work/growvar.service" \
        && pass "registratura-growvar.service grows this disk's partition 3 before /var is checked and mounted" \
        || fail "registratura-growvar.service: $(tr '\n' ' ' < "$work/growvar.service")"
    for f in usr/lib/registratura/grow-var usr/bin/growpart; do
        unsquashfs -o "$root_off" -lls "$img" "$f" 2>/dev/null | grep -q -- "-rwxr-xr-x .*$f$" && pass "root: /$f" || fail "root: no /$f"
    done
    unsquashfs -o "$root_off" -cat "$img" opt/registratura/BUILD-INFO > "$work/BUILD-INFO" 2>/dev/null \
        && pass "BUILD-INFO: $(grep -E '^pjsua2' "$work/BUILD-INFO" | tr '\n' ' ')" || fail "no /opt/registratura/BUILD-INFO"
    unsquashfs -o "$root_off" -lls "$img" opt/registratura/venv/bin/registratura > "$work/ls.txt" 2>&1 \
        && grep -q 'venv/bin/registratura' "$work/ls.txt" && pass "root: /opt/registratura/venv/bin/registratura" \
        || fail "root: no venv"
    em=$(unsquashfs -o "$root_off" -cat "$img" usr/bin/python3.11 2>/dev/null | head -c 20 | od -An -j18 -N2 -tx1 | tr -d ' \n')
    [ "$em" = b700 ] && pass "root: /usr/bin/python3.11 is an aarch64 ELF (e_machine 0xb7)" || fail "root: python3.11 e_machine $em"
else
    fail "partition 2: no squashfs"
fi

# ------------------------------------------------------------------------------------ ext4 /var
dd if="$img" of="$work/var.img" bs=1M skip=$(( $(off 3) / 1048576 )) count=$(( $(size 3) / 1048576 )) conv=sparse status=none
if debugfs -R "ls -p /lib/registratura-etc/registratura" "$work/var.img" > "$work/var.txt" 2>/dev/null \
        && grep -q registratura.example.yaml "$work/var.txt"; then
    pass "/var (ext4 $(dumpe2fs -h "$work/var.img" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')): /lib/registratura-etc/registratura"
else
    fail "/var: no /lib/registratura-etc/registratura"
fi

# ------------------------------------------------------------------------------------ the arm64 tree
if [ -d "$tree/opt/registratura/venv" ]; then
    ch() { chroot "$tree" "$@"; }
    [ "$(ch /usr/bin/python3 -c 'import platform; print(platform.machine())' 2>&1)" = aarch64 ] \
        && pass "chroot (qemu-user): python3 runs as aarch64" || fail "chroot: python3 not aarch64"
    check "chroot: registratura --help" ch /opt/registratura/venv/bin/registratura --help
    check "chroot: import appliance.cli, yaml (C), cryptography, peewee, prometheus_client, phonenumbers, holidays, num2words" \
        ch /opt/registratura/venv/bin/python -c \
        'import appliance.cli, appliance.app, yaml, cryptography.hazmat.primitives.ciphers, peewee, prometheus_client, phonenumbers, holidays, num2words, sdnotify, tqdm; assert yaml.__with_libyaml__'
    if ch /opt/registratura/venv/bin/python -c 'import pjsua2' >/dev/null 2>&1; then
        pass "chroot: pjsua2 imports"
    else
        echo "INFO chroot: pjsua2 not installed ($(grep '^pjsua2' "$tree/opt/registratura/BUILD-INFO" | head -1))"
    fi
    # `registratura check` loads the settings and flows, then imports pjsua2 for the SIP-stack probe: without
    # the arm64 wheel it stops there (and the service stays in safe mode, saying E302).
    ch /opt/registratura/venv/bin/registratura --config /etc/registratura/registratura.example.yaml check > "$work/check.txt" 2>&1
    rc=$?
    if [ "$rc" = 0 ]; then
        pass "chroot: registratura check of the example settings"
    elif [ ! -e "$tree/opt/registratura/venv/lib/python3.11/site-packages/pjsua2" ] \
            && grep -q "^E302: the SIP stack pjsua2 is not installed" "$work/check.txt"; then
        pass "chroot: registratura check loads settings and flows, stops at the SIP-stack probe saying E302 (no pjsua2 here)"
    else
        fail "chroot: registratura check: $(tail -2 "$work/check.txt")"
    fi
    check "chroot: registratura firewall render (example settings)" \
        ch /opt/registratura/venv/bin/registratura --config /etc/registratura/registratura.example.yaml firewall render -o /tmp/fw.nft
    # First boot on a scratch root inside the tree (the image's own /etc stays as built).
    fb=/tmp/firstboot-check
    rm -rf "$tree$fb"; mkdir -p "$tree$fb/boot" "$tree$fb/root/etc/registratura"
    ln -s /opt/registratura/src/ivr_flows "$tree$fb/root/etc/registratura/ivr_flows"
    ln -s /opt/registratura/src/voices "$tree$fb/root/etc/registratura/voices"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tregistratura\n' > "$tree$fb/root/etc/hosts"
    cat > "$tree$fb/boot/registratura.yaml" <<'EOF'
firstboot:
  hostname: reg-pi-test
  network: {interface: eth0, address: 192.168.1.50/24, gateway: 192.168.1.1, dns: [192.168.1.1]}
  ntp: [192.168.1.1]
clinic: {name: "Поликлиника №1", region: RU, language: ru}
sip: {listen: "0.0.0.0:5060", allow_from: ["192.168.1.0/24"], codecs: [PCMA, PCMU]}
data_dir: /var/lib/registratura
flows: {dir: ivr_flows, main: clinic_ru}
EOF
    fbrun() { ch /opt/registratura/bin/registratura-firstboot --boot $fb/boot --root $fb/root --console $fb/console --group registratura; }
    if fbrun > "$work/fb.txt" 2>&1 && [ -f "$tree$fb/boot/registratura.yaml.applied" ] \
            && grep -q reg-pi-test "$tree$fb/root/etc/hostname" \
            && grep -q 'Address=192.168.1.50/24' "$tree$fb/root/etc/systemd/network/10-registratura.network"; then
        pass "chroot: first boot applies good settings (hostname, static network, registratura.yaml.applied)"
    else
        fail "chroot: first boot of good settings: $(tail -3 "$work/fb.txt")"
    fi
    printf 'sip: {listen: "1.2.3:99999"}\n' > "$tree$fb/boot/registratura.yaml"
    if ! fbrun > "$work/fb2.txt" 2>&1 && [ -f "$tree$fb/boot/registratura.yaml.rejected" ] \
            && grep -q 'registratura.yaml:1' "$tree$fb/boot/registratura.yaml.rejected.txt"; then
        pass "chroot: first boot rejects bad settings with file:line ($(head -1 "$tree$fb/boot/registratura.yaml.rejected.txt" | cut -c1-80))"
    else
        fail "chroot: first boot of bad settings: $(tail -3 "$work/fb2.txt")"
    fi
    rm -rf "${tree:?}$fb"
else
    echo "INFO no tree at $tree (build with --keep-tree for the chroot checks)"
fi

echo "checks: $fails failed"
[ "$fails" = 0 ]
