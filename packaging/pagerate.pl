#!/usr/bin/python3
"""pagerate.pl: the C vhostmd's page-rate script, for configurations that call it.

Configurations written for the C vhostmd run ``<action>pagerate.pl</action>``
from /usr/share/vhostmd/scripts (their <path> names that directory) for the
group metric PageRates. This prints what the C script prints, in its format:
the KiB paged in and the KiB paged out during one second (the pgpgin and
pgpgout counters of /proc/vmstat, read one second apart), as two printf
"%f" numbers joined by a comma, without a newline, e.g. ``28.000000,0.000000``.
The second figure is what the C configuration publishes as PageFaultRate.

The built-in host.page_rates gives these rates without a process or a
one-second sleep per update (see docs/builtins.md). The name keeps its .pl
suffix so that existing configurations find it; it needs no Perl.
"""

import sys
import time

VMSTAT = "/proc/vmstat"


def read_counters(path=VMSTAT):
    """pgpgin and pgpgout of /proc/vmstat, in KiB since boot."""
    counters = {}
    with open(path) as vmstat:
        for line in vmstat:
            name, _, value = line.partition(" ")
            if name in ("pgpgin", "pgpgout"):
                counters[name] = int(value)
    missing = {"pgpgin", "pgpgout"} - set(counters)
    if missing:
        raise ValueError("%s has no %s" % (path, " or ".join(sorted(missing))))
    return counters["pgpgin"], counters["pgpgout"]


def main():
    try:
        in_before, out_before = read_counters()
        time.sleep(1)
        in_after, out_after = read_counters()
    except (OSError, ValueError) as err:
        # The C script dies ("no /proc/vmstat"): non-zero status, no output,
        # so the daemon leaves the metric out of the update.
        sys.stderr.write("pagerate.pl: %s\n" % err)
        return 1
    sys.stdout.write("%f,%f" % (in_after - in_before, out_after - out_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
