"""The xenstore transport: metrics written to each Xen domain's own xenstore entries."""
