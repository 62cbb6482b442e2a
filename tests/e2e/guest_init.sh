#!/bin/busybox sh
# /init of the test guests. It does what a distribution's boot would do for
# the metrics devices (load the virtio drivers, make the udev links), runs
# vm-dump-metrics over the disk and over the virtio port, prints what it got
# between markers on the serial console for the host to read, and powers off,
# which ends the domain.

/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
export PYTHONDONTWRITEBYTECODE=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "@@E2E $*@@"; }
# Seconds since boot at each step, to see where a slow boot spends its time.
at() { read -r up _ < /proc/uptime; say "AT $1 $up"; }

# A section is the BEGIN line, the output, one added newline (so END is on
# a line of its own even after output without a final newline), the END line.
section() {
    local name=$1; shift
    say "BEGIN $name"
    "$@"
    echo
    say "END $name"
}

# Poll for a condition, in tenths of a second, since drivers probe and
# the host names the ports asynchronously.
wait_for() {
    tries=$2
    while ! eval "$1"; do
        tries=$((tries - 1))
        [ "$tries" -le 0 ] && return 1
        usleep 100000
    done
}

while read -r module; do
    insmod "$module" || say "INSMOD-FAILED $module"
done < /etc/e2e/modules
at modules-loaded

# The disk: some virtio block device appears in /sys/block.
wait_for 'ls /sys/block | grep -q ^vd' 50 || say "NO-VIRTIO-DISK"

# The port: what udev's 60-virtio-ports rule would make, from the name the host gives.
ports_named() {
    for port in /sys/class/virtio-ports/*; do
        [ -s "$port/name" ] || return 1
    done
}
wait_for 'ls /sys/class/virtio-ports/* >/dev/null 2>&1 && ports_named' 50 || say "NO-VIRTIO-PORT"
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
    [ -s "$port/name" ] && ln -sf "../${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done

at devices-ready
uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
section uuid echo "$uuid"
section sys-block ls /sys/block
section virtio-ports ls -l /dev/virtio-ports

# The daemon picks a new domain up within one update period and connects
# its channel shortly after; until then the disk lacks this guest and the
# port is not answered, so try again, for at most DUMP_SECONDS each.
DUMP_SECONDS=30
uptime_s() { read -r up _ < /proc/uptime; echo "${up%%.*}"; }
dump() {
    local label=$1 attempt=0 rc deadline; shift
    deadline=$(( $(uptime_s) + DUMP_SECONDS ))
    while :; do
        attempt=$((attempt + 1))
        E2E_TRACE=1 vm-dump-metrics "$@" >"/tmp/$label.out" 2>"/tmp/$label.err"
        rc=$?
        [ "$rc" = 0 ] && grep -qi "$uuid" "/tmp/$label.out" && break
        [ "$(uptime_s)" -ge "$deadline" ] && break
        sleep 1
    done
    section "$label" cat "/tmp/$label.out"
    section "$label-log" cat "/tmp/$label.err"
    read -r up _ < /proc/uptime
    say "RESULT $label rc=$rc attempts=$attempt uptime=$up"
}

dump vbd -v --vbd
dump virtio -v --virtio

read -r up _ < /proc/uptime
say "DONE uptime=$up"
poweroff -f
# Only if ACPI power-off failed: a panic, which on_crash turns into an end too.
echo o > /proc/sysrq-trigger
