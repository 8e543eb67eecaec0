#!/bin/sh
# Turn the root tree that mkosi built (image/build.sh) into the bootable x86-64 disk image, with tools that work
# on plain files: no loop device, no mount, no vfat in the build machine's kernel (containers have none).
#   image/assemble.sh TREE OUT.raw [--esp-size 256M] [--root-size 2G] [--var-size 8G] [--cmdline "..."]
# Disk (GPT; partitions found by their GPT names, so an update bundle from another build fits any box):
#   1 registratura-esp     FAT32  systemd-boot (EFI/BOOT/BOOTX64.EFI); one boot loader entry per installed version
#                                 (loader/entries/registratura-VERSION.conf, kernel and initrd in
#                                 registratura-os/VERSION/); registratura/ for the technician's first-boot files
#   2 registratura-root-a  squashfs of TREE without /var (read-only), the version built here
#   3 registratura-root-b  empty: the slot `registratura update apply` writes the next version into (A/B)
#   4 registratura-var     ext4 made from TREE/var (-d: owners and modes kept): settings, database, recordings
# Also OUT's directory gets registratura-x86_64-VERSION.update.tar, the same version as an update bundle
# (appliance/update.py); VERSION comes from TREE/opt/registratura/IMAGE-INFO.json.
set -eu
[ $# -ge 2 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
tree=$1; raw=$2; shift 2
esp_mb=256; root_size=2G; var_size=8G
cmdline="console=tty0 console=ttyS0,115200 systemd.show_status=error"
while [ $# -gt 0 ]; do
    case "$1" in
        --esp-size) esp_mb=${2%M}; shift 2 ;;
        --root-size) root_size=$2; shift 2 ;;
        --var-size) var_size=$2; shift 2 ;;
        --cmdline) cmdline=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
for tool in mksquashfs mkfs.ext4 mkfs.fat mcopy mmd sfdisk sha256sum; do
    command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install squashfs-tools e2fsprogs dosfstools mtools fdisk coreutils" >&2; exit 1; }
done
tree=$(cd "$tree" && pwd)
work=$(dirname "$raw")/assemble.tmp
rm -rf "$work"; mkdir -p "$work"
bytes() { numfmt --from=iec "$1"; }
uuid() { cat /proc/sys/kernel/random/uuid; }

kver=$(ls "$tree/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
[ -n "$kver" ] && [ -f "$tree/boot/initrd.img-$kver" ] || { echo "no kernel/initrd in $tree/boot" >&2; exit 1; }
version=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['image_version'])" "$tree/opt/registratura/IMAGE-INFO.json")
u_esp=$(uuid); u_root=$(uuid); u_root_b=$(uuid); u_var=$(uuid)

# fstab: /var and the ESP by GPT partition name (root comes from the boot entry's root=PARTLABEL=): the root
# of any version, written into either slot, finds them. The ESP is mounted read-write at /efi so first boot
# can rename the technician's files (*.applied / *.rejected) and updates can add boot entries.
cat > "$tree/etc/fstab" <<EOF
# Written by image/assemble.sh. Root: squashfs, read-only, slot a or b (root=PARTLABEL= in the boot entry).
PARTLABEL=registratura-var  /var  ext4  defaults,noatime,commit=30,x-systemd.growfs  0  2
PARTLABEL=registratura-esp  /efi  vfat  umask=0077,shortname=winnt,flush,nofail,x-systemd.device-timeout=10s  0  2
# The root is read-only: /tmp is memory (systemd also needs it to set up services' private /dev).
tmpfs  /tmp  tmpfs  mode=1777,nosuid,nodev,size=256M  0  0
EOF
mkdir -p "$tree/efi"
# /var takes the rest of the disk: the image is ~12 GB whatever card or SSD it is written to. systemd-repart
# (Debian's systemd, run at every boot, a no-op once grown) grows partition 4 into the free space after it; the
# root slots have no definition, so it never touches them. x-systemd.growfs (fstab above) then grows the mounted
# ext4, after repart.
mkdir -p "$tree/usr/lib/repart.d" "$tree/etc/systemd/system/systemd-growfs@var.service.d"
cat > "$tree/usr/lib/repart.d/50-registratura-var.conf" <<EOF
# Written by image/assemble.sh: grow /var (GPT partition "registratura-var") into the free space after it.
[Partition]
Type=var
Label=registratura-var
EOF
cat > "$tree/etc/systemd/system/systemd-growfs@var.service.d/after-repart.conf" <<EOF
# Written by image/assemble.sh: grow the file system after systemd-repart has grown the partition.
[Unit]
After=systemd-repart.service
EOF

# 2. root: everything but /var's contents (an empty /var is the mount point).
echo "squashfs root..."
mksquashfs "$tree" "$work/root.img" -noappend -quiet -comp zstd -wildcards -e 'var/*' >/dev/null
root_real=$(stat -c %s "$work/root.img")
[ "$root_real" -lt "$(bytes "$root_size")" ] || { echo "root squashfs ($root_real bytes) > --root-size $root_size" >&2; exit 1; }

# 3. var: ext4 from the tree's /var.
echo "ext4 /var..."
truncate -s "$var_size" "$work/var.img"
mkfs.ext4 -q -F -L var -U "$(uuid)" -d "$tree/var" "$work/var.img"

# 1. ESP: systemd-boot and this version's boot entry (Boot Loader Specification type #1). No boot counter: the
#    version a box is flashed with is good. systemd-boot boots the newest entry with tries left (sort-key, then
#    version); an update's entry counts its tries down (appliance/update.py).
echo "boot entry $version (kernel $kver)..."
cat > "$work/entry.conf" <<EOF
title Registratura $version
sort-key registratura
version $version
linux /registratura-os/$version/vmlinuz
initrd /registratura-os/$version/initrd.img
options root=PARTLABEL=registratura-root-a rootfstype=squashfs ro panic=10 $cmdline
EOF
printf 'timeout 0\ndefault registratura-*\neditor no\n' > "$work/loader.conf"
cat > "$work/LIESMICH.txt" <<'EOF'
Registratura: put registratura.yaml (and optionally network.yaml and a flows/ folder) in this folder and
boot the box. First boot checks them: registratura.yaml.applied = taken, registratura.yaml.rejected (+ .txt
with the reasons) = refused, the box kept its previous settings.
EOF
truncate -s "${esp_mb}M" "$work/esp.img"
mkfs.fat -F 32 -n ESP "$work/esp.img" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries ::/registratura \
    ::/registratura-os "::/registratura-os/$version"
mcopy -i "$work/esp.img" "$tree/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$tree/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$work/esp.img" "$tree/boot/vmlinuz-$kver" "::/registratura-os/$version/vmlinuz"
mcopy -i "$work/esp.img" "$tree/boot/initrd.img-$kver" "::/registratura-os/$version/initrd.img"
mcopy -i "$work/esp.img" "$work/entry.conf" "::/loader/entries/registratura-$version.conf"
mcopy -i "$work/esp.img" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$work/esp.img" "$work/LIESMICH.txt" ::/registratura/README.txt

# The disk: 1 MiB alignment, GPT backup at the end.
echo "disk..."
esp_b=$((esp_mb * 1048576)); root_b=$(bytes "$root_size"); var_b=$(bytes "$var_size")
total=$((1048576 + esp_b + 2 * root_b + var_b + 1048576))
rm -f "$raw"; truncate -s "$total" "$raw"
sfdisk -q "$raw" <<EOF
label: gpt
unit: sectors
start=2048, size=$((esp_b / 512)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$u_esp, name="registratura-esp"
size=$((root_b / 512)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$u_root, name="registratura-root-a", attrs="GUID:60"
size=$((root_b / 512)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$u_root_b, name="registratura-root-b", attrs="GUID:60"
size=$((var_b / 512)), type=4D21B016-B534-45C2-A9FB-5C16E091FD2D, uuid=$u_var, name="registratura-var"
EOF
off=1048576
dd if="$work/esp.img" of="$raw" bs=1M seek=$((off / 1048576)) conv=notrunc,sparse status=none
off=$((off + esp_b))
dd if="$work/root.img" of="$raw" bs=1M seek=$((off / 1048576)) conv=notrunc status=none
off=$((off + 2 * root_b))   # slot b stays empty (sparse) until the first update
dd if="$work/var.img" of="$raw" bs=1M seek=$((off / 1048576)) conv=notrunc,sparse status=none

# The same version as an update bundle (appliance/update.py): what a box on an older version installs.
bundle_dir=$work/bundle
mkdir -p "$bundle_dir"
mv "$work/root.img" "$bundle_dir/root.img"
cp "$tree/boot/vmlinuz-$kver" "$bundle_dir/vmlinuz"
cp "$tree/boot/initrd.img-$kver" "$bundle_dir/initrd.img"
printf '%s\n' "$version" > "$bundle_dir/VERSION"
printf '%s\n' "$cmdline" > "$bundle_dir/cmdline"
(cd "$bundle_dir" && sha256sum VERSION root.img vmlinuz initrd.img cmdline > SHA256SUMS)
bundle=$(dirname "$raw")/registratura-x86_64-$version.update.tar
tar -C "$bundle_dir" -cf "$bundle" VERSION cmdline vmlinuz initrd.img root.img SHA256SUMS
rm -rf "$work"
echo "disk: $raw ($(du -h --apparent-size "$raw" | cut -f1) apparent, $(du -h "$raw" | cut -f1) on disk); ESP at 1 MiB"
echo "update bundle: $bundle ($(du -h "$bundle" | cut -f1))"
