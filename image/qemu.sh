# Shared by image/test_boot.sh and image/test_update.sh (sourced, bash): the x86-64 firmware, the accelerator
# probe and the qemu monitor.
#   . image/qemu.sh; pick_accel WORK [auto|kvm|tcg]   -> $accel, $cpu (qemu machine/cpu options)
#   qemu_monitor SOCKET "system_powerdown"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

pick_accel() {
    local work=$1 rc
    accel=${2:-auto}
    if [ "$accel" = auto ]; then
        accel=tcg
        if [ -w /dev/kvm ]; then
            # Some nested hypervisors (e.g. kvm_pvm) run SeaBIOS but cannot execute OVMF's early code
            # ("KVM internal error ... emulation failure"): try OVMF under KVM for a few seconds first.
            cp "$OVMF_VARS" "$work/probe-vars.fd"
            # Others abort at once ("failed to set MSR ..."): KVM counts only if the probe is still running at
            # the timeout (exit 124) without an internal error.
            rc=0
            timeout 8 qemu-system-x86_64 -machine q35,accel=kvm -cpu host -m 256 -nographic -monitor none \
                -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE" \
                -drive if=pflash,format=raw,unit=1,file="$work/probe-vars.fd" -net none \
                -serial file:"$work/probe.log" > "$work/probe.out" 2>&1 || rc=$?
            if grep -q "KVM internal error" "$work/probe.out"; then
                echo "INFO KVM cannot run OVMF on this host ($(grep -m1 -o 'emulation failure' "$work/probe.out" || echo 'internal error')): using TCG (slow)"
            elif [ "$rc" != 124 ]; then
                echo "INFO KVM probe exited at once (status $rc: $(grep -m1 -v '^$' "$work/probe.out" || echo 'no message')): using TCG (slow)"
            else
                accel=kvm
            fi
        fi
    fi
    if [ "$accel" = kvm ]; then cpu="-machine q35,accel=kvm -cpu host"; else cpu="-machine q35 -accel tcg,thread=multi -cpu max"; fi
    echo "INFO accelerator: $accel"
}

qemu_monitor() { python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.3); s.recv(4096)
s.sendall(sys.argv[2].encode() + b"\n"); time.sleep(0.5)
PY
}
