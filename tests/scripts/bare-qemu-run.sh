#!/bin/sh
# Stand-in for `stratum run` that boots the guest on bare QEMU at EL1 (no
# hypervisor), with a compact DTB of the same machine so the guest finds it.
# Validates the interrupt tests' expectations without the hypervisor:
#   STRATUM_BIN=tests/scripts/bare-qemu-run.sh \
#     cargo test -p stratum-systests --test interrupts
shift # "run"
kernel=""; gic=3; cpu=cortex-a57; timeout=60
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift 2;;
    --gic) gic=$2; shift 2;;
    --cpu) cpu=$2; shift 2;;
    --timeout) timeout=$2; shift 2;;
    *) shift;;
  esac
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
qemu-system-aarch64 -M virt,gic-version=$gic -cpu $cpu -m 256M -machine dumpdtb=$dir/raw.dtb -display none -nic none >/dev/null 2>&1
dtc -q -I dtb -O dtb -o $dir/virt.dtb $dir/raw.dtb
timeout $timeout qemu-system-aarch64 -M virt,gic-version=$gic -cpu $cpu -m 256M \
  -display none -monitor none -chardev stdio,id=con,signal=off,mux=off -serial chardev:con \
  -nic none -dtb $dir/virt.dtb -kernel $kernel
