"""`python -m ptinspect.archs > archs/VERSIONS.md`: the feature tables as the Markdown page users read."""
from .versions import markdown

print(markdown(), end="")
