#!/bin/busybox sh
# The lab guest's init (PID 1, busybox). It mounts its root disk, reads a NoCloud seed when one is
# attached, applies hostname and addresses, and prints one machine-readable line on the serial
# console (and on its screen) so tests and health checks can see which disk content booted with which identity:
#   VMDR-GUEST ready hostname=H mac=M ip=I/P gw=G dns=D marker=X instance=ID seed=yes|no mac-match=yes|no|n/a agent=A
# agent: running (qemu-ga serves the VM's org.qemu.guest_agent.0 channel), none (asked for, but the
# VM has no such channel), off (not asked for), missing (the initramfs has no qemu-ga).
# Kernel command line: vmdr.mode=writer keeps writing to the root disk (vmdr.write_kbps=N, default 1024).
# vmdr.agent=on: the guest has its QEMU guest agent "installed": qemu-ga runs on the channel when
# the VM has one. Without it the guest is one without the agent (as before it existed), so a
# channel alone answers nothing. vmdr.freeze_delay=S and
# vmdr.thaw_delay=S: the agent's fsfreeze hook sleeps S seconds before the freeze and after the
# thaw, so the freeze or the thaw answers late (how tests make them time out with the real agent);
# the hook reads them from /run/vmdr/freeze-delay and /run/vmdr/thaw-delay, which a test may
# rewrite through the agent's guest-exec.
# It never sends traffic: no DHCP, no ping. It has no ACPI daemon, so stop it with force.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Everything it prints goes to the serial console (/dev/console: console=ttyS0, read by health
# checks) and to the screen (tty0), so a screenshot of its display shows the same lines.
mkfifo /tmp/out
tee /dev/tty0 </tmp/out >/dev/console 2>/dev/null &
exec >/tmp/out 2>&1
say() { echo "VMDR-GUEST $*"; }

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net cdrom isofs virtio_console; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done

arg() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
mode=$(arg vmdr.mode); rate=$(arg vmdr.write_kbps); rate=${rate:-1024}

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /root /seed
if ! mount -t ext4 /dev/vda /root; then say "error no root disk (/dev/vda did not mount)"; fi
marker=$(cat /root/vmdr-marker 2>/dev/null | tr -d ' \n'); marker=${marker:--}

seed=no; instance=-; hostname=lab; want_mac=-; ip=-; gw=-; dns=-
for d in /dev/vd[b-z] /dev/sr0; do
  [ -b "$d" ] || continue
  if mount -t iso9660 -o ro "$d" /seed 2>/dev/null; then
    if [ -f /seed/meta-data ]; then seed=yes; break; fi
    umount /seed
  fi
done
if [ $seed = yes ]; then
  val() { sed -n "s/^ *$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$2" | head -1; }
  instance=$(val instance-id /seed/meta-data); hostname=$(val local-hostname /seed/meta-data)
  nc=/seed/network-config
  if [ -f $nc ]; then
    want_mac=$(val macaddress $nc | tr A-F a-f)
    ip=$(sed -n '/addresses:/{n;s/^ *- *"\{0,1\}\([0-9.]*\/[0-9]*\)"\{0,1\}.*/\1/p}' $nc | head -1)
    gw=$(val gateway4 $nc)
    dns=$(awk '/nameservers:/{n=1} n&&/- /{gsub(/[ "-]/,""); print; exit}' $nc)
  fi
fi
hostname "${hostname:-lab}"

nic=eth0
for n in /sys/class/net/*; do
  [ "$(cat $n/address)" = "$want_mac" ] && nic=${n##*/}
done
mac=$(cat /sys/class/net/$nic/address 2>/dev/null); mac=${mac:--}
if [ "$want_mac" = "-" ]; then match=n/a; elif [ "$mac" = "$want_mac" ]; then match=yes; else match=no; fi
if [ -n "$ip" ] && [ "$ip" != "-" ] && [ "$match" = yes ]; then
  ip link set "$nic" up
  ip addr add "$ip" dev "$nic"
  [ -n "$gw" ] && [ "$gw" != "-" ] && ip route add default via "$gw" dev "$nic"
fi
[ -n "$dns" ] && [ "$dns" != "-" ] && echo "nameserver $dns" >/etc/resolv.conf

# The QEMU guest agent on its virtio-serial port, which has no /dev/virtio-ports/ name without
# udev: the port whose sysfs name is the agent's. It freezes the mounted root disk (/root, ext4)
# on libvirt's fsfreeze; its hook prints each freeze and thaw on the console.
agent=none
if [ "$(arg vmdr.agent)" != on ]; then agent=off
elif [ ! -x /usr/sbin/qemu-ga ]; then agent=missing
elif [ -n "$(ls /sys/bus/virtio/drivers/virtio_console 2>/dev/null | grep virtio)" ]; then
  port=
  i=0
  while [ -z "$port" ] && [ $i -lt 20 ]; do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] || { sleep 0.1; i=$((i + 1)); }
  done
  if [ -n "$port" ]; then
    mkdir -p /etc/qemu /run/vmdr
    for a in freeze thaw; do echo "$(arg vmdr.${a}_delay)" >/run/vmdr/$a-delay; done
    cat >/etc/qemu/fsfreeze-hook <<'HOOK'
#!/bin/sh
echo "VMDR-GUEST fsfreeze $1" >/tmp/out
delay=$(cat /run/vmdr/$1-delay 2>/dev/null)
[ -n "$delay" ] && sleep "$delay"
exit 0
HOOK
    chmod 755 /etc/qemu/fsfreeze-hook
    /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run -F/etc/qemu/fsfreeze-hook &
    agent=running
  fi
fi
say "ready hostname=$(hostname) mac=$mac ip=${ip:--} gw=${gw:--} dns=${dns:--} marker=$marker instance=${instance:--} seed=$seed mac-match=$match agent=$agent"

if [ "$mode" = writer ]; then
  n=0; total=0; last=0
  while :; do
    dd if=/dev/urandom of=/root/vmdr-load bs=64k count=$((rate / 64 + 1)) seek=$((n % 256 * (rate / 64 + 1))) conv=notrunc 2>/dev/null
    sync; n=$((n + 1)); total=$((total + (rate / 64 + 1) * 65536))
    [ $((n - last)) -ge 3 ] && { say "wrote bytes=$total"; last=$n; }
    sleep 1 & wait $!
  done
fi
while :; do sleep 3600 & wait $!; done
