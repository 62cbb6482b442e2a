"""End-to-end test: real libvirtd, real QEMU guests, our daemon and our guest tool."""
