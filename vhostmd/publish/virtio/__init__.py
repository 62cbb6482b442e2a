"""The virtio-serial transport: each VM asks over its own channel for its metrics."""
