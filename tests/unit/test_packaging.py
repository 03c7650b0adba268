"""`pip install .` gains site-packages exactly one import name, `ptinspect` (issue 17): a wheel is built
the way pip builds one and its contents are read, then imported from an empty directory."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _wheel(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("ptinspect-*.whl")
    return wheel


def test_wheel_installs_one_import_name(tmp_path):
    wheel = zipfile.ZipFile(_wheel(tmp_path))
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ptinspect"}
    # The repository's folders are inside it, each module once, as files (not links).
    for module in ("ptinspect/inspector/walker.py", "ptinspect/archs/x86_64.py", "ptinspect/commands/cli.py",
                   "ptinspect/commands/gdb_pt.py"):
        assert module in names
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["ptinspect"]


# Runs with the wheel's files first on sys.path and every source tree (a checkout on the path, an editable
# install's entry) taken off it, as in a fresh virtualenv that installed the wheel.
PROBE = """
import importlib.util, os, sys
sys.path = [p for p in sys.path if not os.path.exists(os.path.join(p or ".", "inspector", "walker.py"))]
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, SITE)
import ptinspect
assert ptinspect.__file__.startswith(SITE), ptinspect.__file__
print([importlib.util.find_spec(name) for name in ("inspector", "commands", "archs")])
from ptinspect.commands.cli import main
sys.argv = ["ptinspect", "--version"]
main()
"""


def test_installed_package_runs_without_the_source_tree(tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(_wheel(tmp_path)).extractall(site)
    out = subprocess.run([sys.executable, "-c", f"SITE = {str(site)!r}\n" + PROBE], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found, version = out.stdout.splitlines()
    assert found == "[None, None, None]"
    assert version.startswith("ptinspect, version ")
