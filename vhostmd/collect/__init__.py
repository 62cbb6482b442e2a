"""Collecting: the metrics of the host and its VMs, from libvirt, /proc and actions.

One update's values end up in a :class:`vhostmd.model.Snapshot`, made by
:class:`vhostmd.collect.collector.Collector`.
"""
