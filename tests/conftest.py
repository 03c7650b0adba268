"""Test-suite settings: hypothesis without wall-clock deadlines (TCG QEMU shares the CPU)."""
from hypothesis import settings

settings.register_profile("ptinspect", deadline=None, max_examples=60)
settings.load_profile("ptinspect")
