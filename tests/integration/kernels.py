"""The test kernels every live test runs on: (arch, kernel name of vm-images/kernels.toml).

One list, so that a kernel added to the VMs is added to every live test. What a kernel cannot make
is not a reason to leave it out: the workload lists it with the reason, and the tests assert that.
"""
from __future__ import annotations

IMAGES = [
    ("x86_64", "7.3"), ("arm64", "7.3"),
    ("x86_64", "7.2"), ("arm64", "7.2"), ("riscv64", "7.2"), ("arm64", "7.2-16k"),
    ("x86_64", "6.12"), ("arm64", "6.12"),
    ("x86_64", "5.10"), ("arm64", "5.10"),
]
IDS = [f"{arch}-{kernel}" for arch, kernel in IMAGES]
