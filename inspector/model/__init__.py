"""The reference model: what the kernel's page tables promise, in plain Python."""
