"""Vmcores made the way kdump makes them: a crash kernel loaded with Debian's kexec-tools, a panic,
and /proc/vmcore saved in the crash kernel, plainly and with Debian's makedumpfile.

One run (`make_vmcores`) of a manifest kernel:
  1. boots the test VM with crashkernel=256M and an initramfs that is the workload's plus a second
     cpio archive (the kernel unpacks concatenated archives in turn, a later file replacing an
     earlier one): a wrapper /init that starts a control loop and then runs the usual init, kexec
     with its shared libraries, the kernel image and the crash initramfs;
  2. asks the guest over a virtio-serial control port to load the crash kernel (`kexec -p`);
  3. takes ptinspect snapshots of the workload and of init_mm over the gdbstub;
  4. asks the guest to crash (`echo c > /proc/sysrq-trigger`); the crash kernel's /init (busybox,
     makedumpfile and its libraries) saves /proc/vmcore in every form of FORMS, each into its own
     virtio-serial port, which QEMU writes to a host file, reports each on the console and powers off;
  5. turns the flattened streams into files with `makedumpfile -R` (Debian's, of the host).

The files, the snapshots, the manifest and what happened (meta.json: sizes, times, makedumpfile's
messages) are cached per kernel image and tool versions under $CACHE/kdump/.

Forms that need a seekable output (-l, -c, -E without -F) are written by makedumpfile itself into
the crash kernel's tmpfs when they are filtered (-d 31: small); unfiltered ones (-d 0) would not fit
in 256 MiB, so makedumpfile streams them flattened and the host reassembles them, as `makedumpfile
-F | ssh ... makedumpfile -R` does.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from ptinspect.archs import all_arches

from ..cache import locked, subdir
from . import VMError, progress
from .apt import DEB_ARCH, AptState
from .images import KernelImage, busybox_path, ensure_image, image_for
from .initramfs import HOST_ARCH, INIT_SCRIPT, Cpio, build_initramfs, select_modules
from .qemu import boot, tail
from .state import VM

REPO = Path(__file__).resolve().parents[2]
CRASHKERNEL = "crashkernel=256M"
TOOLS = ("kexec-tools", "makedumpfile")
BINARIES = ("kexec", "makedumpfile")
BIN_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")
TRIPLETS = {a.name: a.gnu_triplet for a in all_arches()}
# name: (makedumpfile options or None for a plain copy of /proc/vmcore, how it leaves the crash kernel)
#   "file": makedumpfile writes the file in the crash kernel's tmpfs, then it is copied out as is;
#   "flat": makedumpfile -F streams it out and the host reassembles it with makedumpfile -R;
#   "stream": the stream itself is the form (a flattened file, as a pipe or ssh leaves it).
FORMS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "copy": (None, "stream"),
    "lzo-d31": (("-l", "-d", "31"), "file"),
    "zlib-d31": (("-c", "-d", "31"), "file"),
    "elf-d31": (("-E", "-d", "31"), "file"),
    "lzo-d0": (("-l", "-d", "0"), "flat"),
    "zlib-d0": (("-c", "-d", "0"), "flat"),
    "elf-d0": (("-E", "-d", "0"), "flat"),
    "flat-zlib-d31": (("-F", "-c", "-d", "31"), "stream"),
    "flat-elf-d31": (("-F", "-E", "-d", "31"), "stream"),
}
CTL_PORT = "ptinspect.kdump"
# The control and capture ports are virtio-serial ports on PCI: where virtio_pci and virtio_console
# are modules (CONFIG_VIRTIO_PCI=m, CONFIG_VIRTIO_CONSOLE=m: Debian 11's and 12's cloud configs) no port
# appears until they are loaded, so both initramfs carry them and the scripts insmod them first.
PORT_MODULES = ("virtio_pci", "virtio_console")
ARM_TIMEOUT = 300.0
CAPTURE_TIMEOUT = 3600.0
SNAPSHOT_TIMEOUT = 1800.0
LOCK_TIMEOUT = 7200.0

WRAPPER_INIT = """#!/bin/busybox sh
# ptinspect kdump harness (inspector/vm/kdump.py): the control loop, then the usual init.
# (busybox sh opens /dev/null for a background job: this archive adds it, as /dev holds only
# the console until init mounts devtmpfs.)
/bin/busybox sh /ptinspect/kdump/control &
exec /bin/busybox sh /ptinspect/kdump/init.orig
"""

# Runs beside the usual init: waits for its /proc, /sys and /dev, then answers the host on the
# control port: "arm" loads the crash kernel (reply "armed" or "failed: ..."), "crash" panics.
CONTROL = """export PATH=/bin:/sbin:/usr/sbin
while [ ! -e /proc/iomem ] || [ ! -d /sys/class ] || [ ! -e /dev/null ]; do /bin/busybox sleep 1; done
/bin/busybox sleep 2
port=
while [ -z "$port" ]; do
	for d in /sys/class/virtio-ports/*; do
		[ "$(cat "$d/name" 2> /dev/null)" = "@CTL@" ] && port=/dev/${d##*/}
	done
	[ -n "$port" ] && [ -e "$port" ] || { port=; sleep 1; }
done
exec 3<> "$port"
while read -r cmd <&3; do
	case "$cmd" in
	arm)
		args=
		for a in $(cat /proc/cmdline); do
			case "$a" in crashkernel=*) ;; *) args="$args $a" ;; esac
		done
		args="$args nr_cpus=1 irqpoll reset_devices"
		if /usr/sbin/kexec -p /ptinspect/kdump/vmlinuz --initrd=/ptinspect/kdump/initrd \\
			--append="$args" > /tmp/kexec.out 2>&1; then
			echo "armed $(cat /sys/kernel/kexec_crash_loaded) $args" >&3
		else
			echo "failed: $(tr '\\n' ' ' < /tmp/kexec.out)" >&3
		fi ;;
	crash)
		echo "crashing" >&3
		sleep 1
		echo c > /proc/sysrq-trigger ;;
	*) echo "unknown request $cmd" >&3 ;;
	esac
done
"""

# The crash kernel's /init: save /proc/vmcore in every form, report each on the console, power off.
CAPTURE = """#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=90% tmpfs /tmp
say() { echo "PTINSPECT-KDUMP $*" > /dev/console; }
port() {
	for d in /sys/class/virtio-ports/*; do
		[ "$(cat "$d/name")" = "ptinspect.$1" ] && echo "/dev/${d##*/}"
	done
}
lines() { tail -n 4 "$1" | tr '\\n\\t' '  ' | tr -s ' '; }
say "kernel $(uname -r) vmcore $(stat -c %s /proc/vmcore) bytes; makedumpfile: $(makedumpfile -v 2>&1 | head -n 1)"
form() {
	name=$1; how=$2; shift 2
	dev=$(port "$name")
	[ -n "$dev" ] || { say "form $name status 127 no port"; return; }
	t0=$(date +%s)
	case "$how" in
	copy) cat /proc/vmcore > "$dev" 2> /tmp/log; st=$? ;;
	file) makedumpfile "$@" /proc/vmcore /tmp/out > /tmp/log 2>&1; st=$?
		[ $st -eq 0 ] && { cat /tmp/out > "$dev" || st=125; }
		rm -f /tmp/out ;;
	flat) case " $* " in *" -F "*) ;; *) set -- -F "$@" ;; esac
		makedumpfile "$@" /proc/vmcore > "$dev" 2> /tmp/log; st=$? ;;
	esac
	say "form $name status $st seconds $(( $(date +%s) - t0 )) log $(lines /tmp/log)"
}
@FORMS@
say done
sync
poweroff -f
"""


@dataclass(frozen=True)
class Tools:
    """Debian's kexec-tools and makedumpfile of one architecture, unpacked, with what they run on."""

    arch: str
    root: Path  # the unpacked packages
    versions: dict[str, str]
    interpreter: str  # PT_INTERP of the binaries, as a path inside the guest
    files: tuple[str, ...]  # paths (inside root) the binaries need: themselves, ld.so, their libraries

    def binary(self, name: str) -> Path:
        return self.root / next(f for f in self.files if f.rsplit("/", 1)[-1] == name and _is_binary(f))


def _is_binary(rel: str) -> bool:
    return rel.rsplit("/", 1)[0] in BIN_DIRS


def _closure(apt: AptState, packages: tuple[str, ...], deb_arch: str) -> list[str]:
    """The packages and the library packages they depend on, recursively (Depends and Pre-Depends)."""
    out = apt._run("apt-cache", ["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                                 "--no-breaks", "--no-replaces", "--no-enhances",
                                 *(f"{p}:{deb_arch}" for p in packages)], 120.0)
    names = []
    for line in out.splitlines():
        if line.startswith((" ", "<")) or not line.strip():
            continue
        name, _, arch = line.strip().partition(":")
        if arch and arch != deb_arch:
            continue
        if name in packages or name.startswith(("lib", "zlib")):
            names.append(name)
    return sorted(set(names))


def _elf_needs(path: Path) -> tuple[str | None, list[str]]:
    """(PT_INTERP, DT_NEEDED) of an ELF file."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        interp = None
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()  # type: ignore[attr-defined]  # an InterpSegment
        dynamic = elf.get_section_by_name(".dynamic")
        needed = ([tag.needed for tag in dynamic.iter_tags()  # type: ignore[attr-defined]  # a DynamicSection
                   if tag.entry.d_tag == "DT_NEEDED"] if dynamic else [])
    return interp, needed


def crash_tools(arch: str) -> Tools:
    """kexec-tools and makedumpfile for ARCH from Debian (the newest in the private apt state), with the
    shared libraries they load, found by following DT_NEEDED through the unpacked packages."""
    deb_arch = DEB_ARCH[arch]
    apt = AptState()
    apt.update()
    versions = {p: max(apt.versions(p, deb_arch).values(), key=_version_key) for p in TOOLS}
    key = hashlib.sha256(json.dumps([arch, versions]).encode()).hexdigest()[:12]
    dest = subdir("kdump-tools") / f"{arch}-{key}"
    triplet = TRIPLETS[arch]
    with locked(dest.with_name(dest.name + ".lock"), LOCK_TIMEOUT):
        meta = dest / "tools.json"
        if not meta.exists():
            shutil.rmtree(dest, ignore_errors=True)
            debs = dest / "debs"
            packages = _closure(apt, TOOLS, deb_arch)
            progress(f"kdump tools for {arch}: downloading {', '.join(packages)}")
            apt.download([f"{p}:{deb_arch}" for p in packages], debs)
            root = dest / "root"
            for deb in sorted(debs.glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=300)
            interp, files = None, []
            todo = []
            for name in BINARIES:
                where = [f"{d}/{name}" for d in BIN_DIRS if (root / d / name).is_file()]
                if not where:
                    raise VMError(f"no {name} in the unpacked packages ({root})")
                todo.append(where[0])
            seen: set[str] = set()
            while todo:
                rel = todo.pop()
                if rel in seen:
                    continue
                seen.add(rel)
                files.append(rel)
                got, needed = _elf_needs(root / rel)
                interp = interp or got
                for lib in needed:
                    found = [f"{d}/{lib}" for d in (f"usr/lib/{triplet}", f"lib/{triplet}", "usr/lib", "lib")
                             if (root / d / lib).exists()]
                    if not found:
                        raise VMError(f"{rel} needs {lib}, which no unpacked package holds ({dest})")
                    todo.append(found[0])
            if interp is None:
                raise VMError(f"{todo} in {root} name no dynamic loader (PT_INTERP)")
            loader = next((p for p in (interp.lstrip("/"), "usr/" + interp.lstrip("/"),
                                       f"usr/lib/{triplet}/{Path(interp).name}") if (root / p).exists()), None)
            if loader is None:
                raise VMError(f"the dynamic loader {interp} is in no unpacked package ({dest})")
            files.append(loader)
            meta.write_text(json.dumps({"versions": versions, "interpreter": interp, "files": files,
                                        "packages": packages}, indent=1))
    info = json.loads(meta.read_text())
    return Tools(arch, dest / "root", info["versions"], info["interpreter"], tuple(info["files"]))


def _version_key(version: str) -> list:
    """Debian versions compared roughly (enough to pick the newest of a few suites)."""
    return [int(x) if x.isdigit() else x for x in re.split(r"[^0-9A-Za-z]+", version)]


def _add_tools(cpio: Cpio, tools: Tools, which: tuple[str, ...]) -> None:
    """The binaries WHICH, their libraries (followed symlinks) and the loader at its PT_INTERP path."""
    made: set[str] = set()
    written: set[str] = set()

    def directories(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                cpio.directory(d)

    triplet = TRIPLETS[tools.arch]
    for rel in tools.files:
        if _is_binary(rel) and Path(rel).name not in which:
            continue
        data = (tools.root / rel).resolve().read_bytes()
        if _is_binary(rel):
            target = f"usr/sbin/{Path(rel).name}"
        elif Path(rel).name == Path(tools.interpreter).name:
            target = tools.interpreter.lstrip("/")
        else:
            target = f"usr/lib/{triplet}/{Path(rel).name}"
        if target in written:
            continue
        written.add(target)
        directories(target)
        cpio.file(target, data, executable=True)


def _mode(opts: tuple[str, ...] | None, how: str) -> str:
    """How CAPTURE's form() saves a form: copy, file (into tmpfs, then out), flat (makedumpfile -F to the port)."""
    if opts is None:
        return "copy"
    return "flat" if how == "flat" or "-F" in opts else "file"


def port_modules(image: KernelImage) -> list[tuple[str, bytes]]:
    """(file name, .ko bytes) of PORT_MODULES and their dependencies, dependencies first; none where built in."""
    found = select_modules(image.modules_dir, wanted=PORT_MODULES)
    if missing := [name for name, where, _ in found if where == "missing"]:
        raise VMError(f"{image.id}: the kdump ports need {', '.join(missing)}, neither built in nor a module")
    return [(where, data) for _, where, data in found if data]


def _loading(script: str, modules: list[tuple[str, bytes]], where: str) -> str:
    """SCRIPT with an insmod of each of MODULES (in WHERE) before its first command."""
    lines = "".join(f"/bin/busybox insmod {where}/{name}\n" for name, _ in modules)
    head, sep, rest = script.partition("\n") if script.startswith("#!") else ("", "", script)
    return head + sep + lines + rest


def _add_modules(cpio: Cpio, modules: list[tuple[str, bytes]], where: str) -> None:
    if modules:
        cpio.directory(where)
    for name, data in modules:
        cpio.file(f"{where}/{name}", data)


def crash_initramfs(image: KernelImage, tools: Tools, dest: Path) -> Path:
    """The crash kernel's initramfs: busybox, makedumpfile with its libraries, CAPTURE as /init."""
    modules = port_modules(image)
    script = CAPTURE.replace("@FORMS@", "\n".join(f"form {name} {_mode(opts, how)} {' '.join(opts or ())}".strip()
                                                  for name, (opts, how) in FORMS.items()))
    cpio = Cpio()
    for name in ("bin", "sbin", "dev", "proc", "sys", "tmp"):
        cpio.directory(name)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", _loading(script, modules, "/modules").encode(), executable=True)
    _add_modules(cpio, modules, "modules")
    cpio.file("bin/busybox", busybox_path(image.arch).read_bytes(), executable=True)
    _add_tools(cpio, tools, ("makedumpfile",))
    dest.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    return dest


def kdump_initramfs(image: KernelImage, tools: Tools, crash_initrd: Path, dest: Path) -> Path:
    """The workload's initramfs followed by a cpio that replaces /init with WRAPPER_INIT and adds
    the control loop, kexec, the kernel image and the crash initramfs."""
    cpio = Cpio()
    for name in ("dev", "ptinspect", "ptinspect/kdump"):
        cpio.directory(name)
    cpio.char_device("dev/null", 1, 3)
    cpio.file("init", WRAPPER_INIT.encode(), executable=True)
    cpio.file("ptinspect/kdump/init.orig", INIT_SCRIPT.read_bytes(), executable=True)
    modules = port_modules(image)
    control = _loading(CONTROL.replace("@CTL@", CTL_PORT), modules, "/ptinspect/kdump/modules")
    cpio.file("ptinspect/kdump/control", control.encode(), executable=True)
    _add_modules(cpio, modules, "ptinspect/kdump/modules")
    cpio.file("ptinspect/kdump/vmlinuz", image.vmlinuz.read_bytes())
    cpio.file("ptinspect/kdump/initrd", crash_initrd.read_bytes())
    _add_tools(cpio, tools, ("kexec",))
    dest.write_bytes(build_initramfs(image).read_bytes() + gzip.compress(cpio.finish(), compresslevel=1, mtime=0))
    return dest


class Control:
    """The host end of the guest's control port (a unix socket QEMU serves)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def ask(self, request: str, timeout: float) -> str:
        """Send REQUEST and wait for its one-line answer (the guest's loop may start late: resend)."""
        deadline = time.monotonic() + timeout
        self.sock.sendall(request.encode() + b"\n")
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise VMError(f"the guest's kdump control loop did not answer {request!r} within {timeout:.0f} s")
            self.sock.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise VMError(f"the kdump control port closed while waiting for the answer to {request!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace").strip()

    def close(self) -> None:
        self.sock.close()


def _cli(*args: str | Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def reassemble(tools: Tools, flat: Path, out: Path) -> None:
    """`makedumpfile -R OUT < FLAT` with Debian's makedumpfile of the host, run through its own loader."""
    loader = tools.root / tools.interpreter.lstrip("/")
    if not loader.exists():
        loader = tools.root / "usr" / tools.interpreter.lstrip("/")
    libs = tools.root / "usr" / "lib" / TRIPLETS[tools.arch]
    with flat.open("rb") as src:
        done = subprocess.run([str(loader), "--library-path", str(libs), str(tools.binary("makedumpfile")), "-R",
                               str(out)], stdin=src, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise VMError(f"makedumpfile -R {out} < {flat} failed: {done.stderr.strip()[-500:]}")


def _reports(serial: Path) -> list[str]:
    text = serial.read_bytes().decode(errors="replace").replace("\r", "") if serial.exists() else ""
    return [line.split("PTINSPECT-KDUMP ", 1)[1] for line in text.splitlines() if "PTINSPECT-KDUMP " in line]


def make_vmcores(arch: str, series: str = "7.2", refresh: bool = False) -> Path:
    """The directory of one kdump run of the SERIES kernel for ARCH (made once, then cached):
    FORM files (see FORMS; missing where that form failed), live-pid.json and live-kernel.json
    (snapshots taken just before the crash), manifest.json, meta.json."""
    image = ensure_image(image_for(arch, series))
    tools = crash_tools(arch)
    host_tools = tools if arch == HOST_ARCH else crash_tools(HOST_ARCH or "x86_64")
    # The workload's initramfs is named by the digest of its inputs: a run made with another workload
    # (other regions, another manifest) is not this one.
    workload = build_initramfs(image).name
    loaded = [name for name, _ in port_modules(image)]  # none where built in: those runs' digests stay
    digest = hashlib.sha256(json.dumps([image.version, tools.versions, FORMS, CAPTURE, CONTROL, WRAPPER_INIT,
                                        CRASHKERNEL, workload, *loaded]).encode()).hexdigest()[:12]
    dest = subdir("kdump") / f"{image.id}-{digest}"
    with locked(dest.with_name(dest.name + ".lock"), LOCK_TIMEOUT):
        if (dest / "meta.json").exists() and not refresh:
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f"kdump-{image.id}-", dir=dest.parent))
        try:
            _run(image, series, tools, host_tools, work)
            work.rename(dest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return dest


def _run(image: KernelImage, series: str, tools: Tools, host_tools: Tools, work: Path) -> None:
    began = time.monotonic()
    initrd = kdump_initramfs(image, tools, crash_initramfs(image, tools, work / "crash-initrd.cpio.gz"),
                             work / "initrd.cpio.gz")
    ctl = Path(tempfile.mkdtemp(prefix="ptinspect-kd-")) / "ctl.sock"
    raw = work / "raw"
    raw.mkdir()
    qemu_args = ["-device", "virtio-serial-pci,id=kdserial",
                 "-chardev", f"socket,id=kdctl,path={ctl},server=on,wait=off",
                 "-device", f"virtserialport,bus=kdserial.0,chardev=kdctl,name={CTL_PORT}"]
    for i, name in enumerate(FORMS):
        qemu_args += ["-chardev", f"file,id=kd{i},path={raw / name}",
                      "-device", f"virtserialport,bus=kdserial.0,chardev=kd{i},name=ptinspect.{name}"]
    if image.arch == "arm64":  # else kexec refuses with nokaslr: "kaslr-seed is not wiped to 0"
        qemu_args += ["-M", "virt,dtb-randomness=off"]
    meta: dict = {"image": image.id, "release": image.release, "tools": tools.versions, "crashkernel": CRASHKERNEL,
                  "times": {}, "forms": {}}
    vm: VM | None = None
    try:
        vm = boot(image.arch, series, initrd=initrd, append=CRASHKERNEL, qemu_args=qemu_args, detach=False,
                  name=f"kdump-{image.id}")
        meta["times"]["boot"] = round(time.monotonic() - began, 1)
        shutil.copy(vm.manifest, work / "manifest.json")
        control = Control(ctl, 30.0)
        answer = control.ask("arm", ARM_TIMEOUT)
        meta["arm"] = answer
        if not answer.startswith("armed 1"):
            raise VMError(f"{image.id}: loading the crash kernel failed: {answer}")
        progress(f"{image.id}: crash kernel loaded ({answer})")
        files: list[str | Path] = ["--vmlinux", image.vmlinux, "--config-file", image.config]
        for what, root in (("pid", ["--pid", str(vm.workload_pid)]), ("kernel", ["--kernel"])):
            t0 = time.monotonic()
            done = _cli("snapshot", "--gdb", vm.gdb, *files, *root, work / f"live-{what}.json",
                        timeout=SNAPSHOT_TIMEOUT)
            if done.returncode:
                raise VMError(f"{image.id}: the live snapshot ({what}) failed: {done.stderr.strip()}")
            meta["times"][f"snapshot {what}"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        meta["crash"] = control.ask("crash", 60.0)
        control.close()
        assert vm.process is not None
        try:
            vm.process.wait(timeout=CAPTURE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise VMError(f"{image.id}: the crash kernel did not finish within {CAPTURE_TIMEOUT:.0f} s:\n"
                          f"{tail(Path(vm.serial_log))}") from None
        meta["times"]["crash and capture"] = round(time.monotonic() - t0, 1)
        reports = _reports(Path(vm.serial_log))
        shutil.copy(vm.serial_log, work / "serial.log")
        if "done" not in reports:
            raise VMError(f"{image.id}: the crash kernel did not finish its captures:\n{tail(Path(vm.serial_log))}")
        meta["capture kernel"] = reports[0]
        for line in reports:
            m = re.match(r"form (\S+) status (\d+) seconds (\d+) log (.*)", line)
            if m:
                meta["forms"][m[1]] = {"status": int(m[2]), "seconds": int(m[3]), "log": m[4].strip()}
    finally:
        if vm is not None:
            vm.stop()
        shutil.rmtree(ctl.parent, ignore_errors=True)
    for name, (opts, how) in FORMS.items():
        form = meta["forms"].setdefault(name, {"status": None, "log": "no report"})
        data = raw / name
        if form["status"] != 0 or not data.exists() or not data.stat().st_size:
            form["file"] = None
            data.unlink(missing_ok=True)
            continue
        t0 = time.monotonic()
        if how == "flat":
            reassemble(host_tools, data, work / name)
            data.unlink()
            form["reassembled"] = "makedumpfile -R on the host"
            form["reassemble seconds"] = round(time.monotonic() - t0, 1)
        else:
            data.rename(work / name)
        form["file"] = name
        form["bytes"] = (work / name).stat().st_size
        form["options"] = list(opts) if opts else None
    raw.rmdir()
    meta["times"]["total"] = round(time.monotonic() - began, 1)
    (work / "meta.json").write_text(json.dumps(meta, indent=1))
    progress(f"{image.id}: kdump run done: " + ", ".join(
        f"{n} {f.get('bytes', 'failed')}" for n, f in meta["forms"].items()))
