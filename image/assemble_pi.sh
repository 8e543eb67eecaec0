#!/bin/sh
# Turn the arm64 root tree (image/build_arm64.sh) into a Raspberry Pi 4 disk image, on plain files: no loop
# device, no mount (the build machine may be a container without vfat).
#   image/assemble_pi.sh TREE OUT.img [--boot-size 256M] [--root-size 2G] [--var-size 8G] [--cmdline "..."]
#   image/assemble_pi.sh --print-boot-config [--kernel VER] [--disk-id HEX8] [--cmdline "..."]  # print only
# Disk (MBR: the Pi's boot ROM/firmware reads the first FAT partition of an MBR disk; disk id = PARTUUID prefix):
#   1 FAT32 (type 0c, "RASPIFIRM")  /boot/firmware on the box: GPU firmware (start4.elf, fixup4.dat, bootcode.bin),
#            config.txt, cmdline.txt, Debian's kernel + initramfs, the bcm27xx DTBs; the technician puts
#            registratura.yaml here
#   2 squashfs (type 83)  TREE without /var and /boot/firmware, read-only (root=PARTUUID=<id>-02 ro)
#   3 ext4 (type 83, "var")  TREE/var (-d: owners and modes kept): settings, database, recordings, journal
#   /var grows into the rest of the card at boot: registratura-growvar.service (growpart, before /var is mounted)
#   and x-systemd.growfs (the ext4, after).
# TREE/etc/fstab and the grow unit are written here (the disk id is only known now) before the squashfs is made.
set -eu
boot_mb=256; root_size=2G; var_size=8G
cmdline="console=tty0 console=ttyS1,115200 systemd.show_status=error"
print=0; kver="KVER"; disk_id=""
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = --print-boot-config ]; then
    print=1; shift
else
    [ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
    tree=$1; img=$2; shift 2
fi
while [ $# -gt 0 ]; do
    case "$1" in
        --boot-size) boot_mb=${2%M}; shift 2 ;;
        --root-size) root_size=$2; shift 2 ;;
        --var-size) var_size=$2; shift 2 ;;
        --cmdline) cmdline=$2; shift 2 ;;
        --kernel) kver=$2; shift 2 ;;
        --disk-id) disk_id=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

# config.txt: read by the Pi 4's GPU firmware (start4.elf). Debian's mainline kernel and DTBs
# (upstream_kernel=1: bcm2711-rpi-4-b.dtb, not the Raspberry Pi kernel's names); the kernel is gzip'd
# vmlinuz, which the Pi 4 firmware unpacks itself. dtparam=watchdog=on enables the bcm2835 watchdog that
# systemd pets (RuntimeWatchdogSec=30s).
config_txt() {
    cat <<EOF
# Written by image/assemble_pi.sh (Registratura, Raspberry Pi 4, Debian 12 arm64). The box's root is
# read-only: this file is only read by the Pi firmware at power-on.
[all]
arm_64bit=1
enable_uart=1
upstream_kernel=1
kernel=vmlinuz-$1
initramfs initrd.img-$1 followkernel
dtparam=watchdog=on
disable_splash=1
EOF
}

# cmdline.txt: one line. Root by PARTUUID (MBR: <disk id>-<partition number>), squashfs, read-only.
cmdline_txt() {
    printf 'root=PARTUUID=%s-02 rootfstype=squashfs ro rootwait fsck.repair=yes net.ifnames=0 %s\n' "$1" "$cmdline"
}

# /etc/fstab (in the squashfs root). /var grows at boot: x-systemd.requires runs registratura-growvar.service
# (the partition) before the mount, x-systemd.growfs the ext4 after it.
fstab_txt() {
    cat <<EOF
# Written by image/assemble_pi.sh. Root: squashfs, read-only (root=PARTUUID=$1-02 in cmdline.txt).
PARTUUID=$1-03  /var  ext4  defaults,noatime,commit=30,x-systemd.growfs,x-systemd.requires=registratura-growvar.service  0  2
# The FAT partition read-write, so first boot can rename the technician's files (*.applied / *.rejected).
# 60 s for its device (x86: 10 s): under qemu TCG emulation (virt) udev needed ~28 s, a slow SD card or USB
# SSD may too, and first boot (ordered after this mount) must not miss registratura.yaml. nofail: a box whose
# FAT partition is gone still boots, 60 s later.
PARTUUID=$1-01  /boot/firmware  vfat  umask=0077,shortname=winnt,flush,nofail,x-systemd.device-timeout=60s  0  2
# The root is read-only: /tmp is memory (systemd also needs it to set up services' private /dev).
tmpfs  /tmp  tmpfs  mode=1777,nosuid,nodev,size=256M  0  0
EOF
}

# The partition half of growing /var (systemd-repart handles only GPT; the Pi firmware boots from MBR). A
# failure is logged and ignored ("-"): /var is then mounted at its old size, never left unmounted.
growvar_unit() {
    esc="dev-disk-by\\x2dpartuuid-$1\\x2d03"  # systemd-escape of /dev/disk/by-partuuid/<id>-03
    dev="$esc.device"
    cat <<EOF
# Written by image/assemble_pi.sh: grow the /var partition into the rest of the disk before it is checked and
# mounted (pulled in by x-systemd.requires on /var in /etc/fstab; systemd-growfs grows the ext4 afterwards).
[Unit]
Description=Grow the /var partition into the rest of the disk
DefaultDependencies=no
Requires=$dev
After=$dev
Before=var.mount systemd-fsck@$esc.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-/usr/lib/registratura/grow-var /dev/disk/by-partuuid/$1-03
EOF
}

if [ "$print" = 1 ]; then
    echo "== config.txt"; config_txt "$kver"
    echo "== cmdline.txt"; cmdline_txt "${disk_id:-DISKID}"
    echo "== fstab"; fstab_txt "${disk_id:-DISKID}"
    echo "== registratura-growvar.service"; growvar_unit "${disk_id:-DISKID}"
    exit 0
fi

for tool in mksquashfs mkfs.ext4 mkfs.fat mcopy mmd sfdisk; do
    command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install squashfs-tools e2fsprogs dosfstools mtools fdisk" >&2; exit 1; }
done
tree=$(cd "$tree" && pwd)
work=$(dirname "$img")/assemble-pi.tmp
rm -rf "$work"; mkdir -p "$work"
bytes() { numfmt --from=iec "$1"; }

kver=$(ls "$tree/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
[ -n "$kver" ] && [ -f "$tree/boot/initrd.img-$kver" ] || { echo "no kernel/initrd in $tree/boot" >&2; exit 1; }
fw="$tree/usr/lib/raspi-firmware"
[ -f "$fw/start4.elf" ] || { echo "no Pi firmware in $fw (package raspi-firmware)" >&2; exit 1; }
dtbs="$tree/usr/lib/linux-image-$kver/broadcom"
[ -f "$dtbs/bcm2711-rpi-4-b.dtb" ] || { echo "no bcm2711-rpi-4-b.dtb in $dtbs" >&2; exit 1; }
[ -n "$disk_id" ] || disk_id=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
case "$disk_id" in 00000000|"") echo "bad disk id '$disk_id'" >&2; exit 1 ;; esac

fstab_txt "$disk_id" > "$tree/etc/fstab"
growvar_unit "$disk_id" > "$tree/etc/systemd/system/registratura-growvar.service"
install -D -m 0755 "$here/arm64/grow-var" "$tree/usr/lib/registratura/grow-var"
mkdir -p "$tree/boot/firmware"

# 2. root: everything but /var's contents and what raspi-firmware's hooks copied to /boot/firmware (the FAT
#    partition is mounted there).
echo "squashfs root..."
mksquashfs "$tree" "$work/root.img" -noappend -quiet -comp zstd -wildcards -e 'var/*' -e 'boot/firmware/*' >/dev/null
root_real=$(stat -c %s "$work/root.img")
[ "$root_real" -lt "$(bytes "$root_size")" ] || { echo "root squashfs ($root_real bytes) > --root-size $root_size" >&2; exit 1; }

# 3. var: ext4 from the tree's /var.
echo "ext4 /var..."
truncate -s "$var_size" "$work/var.img"
mkfs.ext4 -q -F -L var -U "$(cat /proc/sys/kernel/random/uuid)" -d "$tree/var" "$work/var.img"

# 1. FAT: firmware, kernel, initramfs, DTBs, config.txt, cmdline.txt, the technician's README.
echo "FAT boot partition ($kver)..."
config_txt "$kver" > "$work/config.txt"
cmdline_txt "$disk_id" > "$work/cmdline.txt"
cat > "$work/README.txt" <<'EOF'
Registratura: put registratura.yaml (and optionally network.yaml and a flows/ folder) on this drive, next to
this file, and boot the box. First boot checks them: registratura.yaml.applied = taken,
registratura.yaml.rejected (+ .txt with the reasons) = refused, the box kept its previous settings.
registratura.example.yaml lists every key. Do not change config.txt or cmdline.txt.
EOF
truncate -s "${boot_mb}M" "$work/boot.img"
mkfs.fat -F 32 -n RASPIFIRM "$work/boot.img" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$work/boot.img" "$fw"/* ::/
mcopy -i "$work/boot.img" "$dtbs"/bcm*.dtb ::/
mcopy -i "$work/boot.img" "$tree/boot/vmlinuz-$kver" "$tree/boot/initrd.img-$kver" ::/
mcopy -i "$work/boot.img" "$work/config.txt" "$work/cmdline.txt" "$work/README.txt" ::/
ex="$tree/opt/registratura/src/image/registratura.example.yaml"
[ -f "$ex" ] && mcopy -i "$work/boot.img" "$ex" ::/registratura.example.yaml
[ -f "$tree/opt/registratura/BUILD-INFO" ] && mcopy -i "$work/boot.img" "$tree/opt/registratura/BUILD-INFO" ::/BUILD-INFO.txt

# The disk: MBR, 1 MiB alignment.
echo "disk..."
boot_b=$((boot_mb * 1048576)); root_b=$(bytes "$root_size"); var_b=$(bytes "$var_size")
total=$((1048576 + boot_b + root_b + var_b))
rm -f "$img"; truncate -s "$total" "$img"
sfdisk -q "$img" <<EOF
label: dos
label-id: 0x$disk_id
unit: sectors
start=2048, size=$((boot_b / 512)), type=c, bootable
size=$((root_b / 512)), type=83
size=$((var_b / 512)), type=83
EOF
off=1048576
dd if="$work/boot.img" of="$img" bs=1M seek=$((off / 1048576)) conv=notrunc,sparse status=none
off=$((off + boot_b))
dd if="$work/root.img" of="$img" bs=1M seek=$((off / 1048576)) conv=notrunc status=none
off=$((off + root_b))
dd if="$work/var.img" of="$img" bs=1M seek=$((off / 1048576)) conv=notrunc,sparse status=none
rm -rf "$work"
echo "disk: $img ($(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) on disk); disk id $disk_id, FAT at 1 MiB"
