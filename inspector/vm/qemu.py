"""Boot a kernel under QEMU with a gdbstub and QMP, and wait for the workload's manifest on the console."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir, locked, subdir
from ..targets.qmp import QmpError, wait_for_qmp
from . import VMError, progress
from .images import KernelImage, ensure_image, image_for
from .state import NAME_RE, VM, booting, load, state_file
from .sysdeps import QEMU, check_system, host_arch

BEGIN, END = "PTINSPECT-MANIFEST-BEGIN", "PTINSPECT-MANIFEST-END"
FAILURE_MARKS = ("Kernel panic - not syncing", "PTINSPECT-WORKLOAD-EXIT")
TAIL_LINES = 40
START_TIMEOUT = 30.0
PORT_ATTEMPTS = 5
MAX_UNIX_PATH = 100
MAX_CPUS = 8
KVM_PROBE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Machine:
    """How QEMU emulates one architecture."""

    args: tuple[str, ...]
    console: str
    boot_timeout: float  # seconds to the manifest; TCG boots measured 7-22 s on 2 shared cores


MACHINES = {
    # -cx16: QEMU 7.2's TCG garbles RFLAGS after the %gs-relative cmpxchg16b of SLUB's fast path,
    # and 6.12 guests crashed at random in __kmalloc (4 of 24 boots; 0 of 32 without CX16).
    "x86_64": Machine(("-cpu", "qemu64,-cx16"), "ttyS0", 180.0),
    "arm64": Machine(("-M", "virt", "-cpu", "max,pauth-impdef=on"), "ttyAMA0", 180.0),
    "riscv64": Machine(("-M", "virt", "-cpu", "rv64,svnapot=on,svpbmt=on", "-bios", "default"), "ttyS0", 300.0),
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def supports_device(arch: str, device: str) -> bool:
    """Whether QEMU's machine for ARCH accepts DEVICE (riscv64 virt in QEMU 7.2 refuses vmcoreinfo:
    its fw_cfg has no DMA). Asked by starting the machine paused and quitting from the monitor."""
    cmd = [QEMU[arch], *MACHINES[arch].args, "-device", device, "-S", "-display", "none", "-nodefaults",
           "-monitor", "stdio"]
    try:
        return subprocess.run(cmd, input="quit\n", capture_output=True, text=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _running(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the booting process dies (no QEMU left behind)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last LINES lines of a text file ("" if absent)."""
    try:
        text = path.read_bytes().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _failure(name: str, reason: str, run_dir: Path) -> VMError:
    parts = [f"VM {name}: {reason}"]
    if qemu_err := tail(run_dir / "qemu.log", 10):
        parts.append(f"--- QEMU output ({run_dir / 'qemu.log'}) ---\n{qemu_err}")
    parts.append(f"--- last {TAIL_LINES} lines of the serial log ({run_dir / 'serial.log'}) ---\n"
                 f"{tail(run_dir / 'serial.log') or '(empty)'}")
    return VMError("\n".join(parts))


def _reserve_name(wanted: str | None, default: str) -> str:
    """A free VM name (WANTED must be free; else DEFAULT, DEFAULT-2, ...); writes a placeholder state."""
    with locked(subdir("vms") / ".lock", 30.0):
        candidates = [wanted] if wanted else [default] + [f"{default}-{n}" for n in range(2, 100)]
        for name in candidates:
            if not NAME_RE.match(name):
                raise VMError(f"bad VM name {name!r}: use letters, digits, '.', '_', '-'")
            path = state_file(name)
            held = load(path)
            if (held is not None and held.alive()) or booting(path):
                continue
            path.write_text(json.dumps({"booting": os.getpid()}))
            return name
    raise VMError(f"VM name {wanted or default} is in use; stop it (ptinspect vm stop) or pass another --name")


def _kernel(arch: str, series: str, image: Path | None, vmlinux: Path | None,
            initrd: Path | None) -> tuple[KernelImage | None, Path, Path | None, Path]:
    """(manifest image, kernel, vmlinux, initrd) to boot.

    Without IMAGE the manifest kernel of SERIES boots. A user's IMAGE without INITRD gets the
    initramfs of the manifest kernel (its modules may not load into IMAGE; init reports that).
    """
    kimg = ensure_image(image_for(arch, series)) if image is None or initrd is None else None
    if initrd is None:
        from .initramfs import build_initramfs  # the workload helper's builder

        assert kimg is not None
        initrd = build_initramfs(kimg)
    if image is None:
        assert kimg is not None
        return kimg, kimg.vmlinuz, vmlinux or kimg.vmlinux, initrd
    return kimg, image, vmlinux, initrd


def qemu_command(arch: str, kernel: Path, initrd: Path, append: str, serial: Path, qmp: str, console: str,
                 port: int, la57: bool = False, accel: str = "tcg", extra: Sequence[str] = (),
                 numa_nodes: int = 1, cpus: int | None = None) -> list[str]:
    """The QEMU command line of a harness boot (1 GiB; gdbstub; QMP).

    NUMA_NODES > 1 splits the memory evenly into that many nodes, so that pages can migrate between
    them (`vm op NAME migrate`). CPUS vCPUs (default_cpus) are split evenly over the nodes, in order;
    fewer vCPUs than nodes all sit on node 0, the other nodes memory only.

    The serial console is a unix socket server (CONSOLE) that also logs everything the guest
    writes to SERIAL, connected or not: a client writes operation requests into it (ops.py).
    """
    from .initramfs import QEMU_DEVICES  # the workload helper's devices (none while swap is zram)

    machine = MACHINES[arch]
    args = list(machine.args)
    if la57:
        args[1] += ",+la57"
    cpus = cpus or default_cpus(arch, numa_nodes)
    cmd = [QEMU[arch], *args, "-accel", accel, "-m", "1G", "-smp", str(cpus), "-nodefaults", "-display", "none",
           "-no-reboot",
           "-chardev", f"socket,id=console,path={console},server=on,wait=off,logfile={serial},logappend=off",
           "-serial", "chardev:console", "-gdb", f"tcp:127.0.0.1:{port}",
           "-qmp", f"unix:{qmp},server=on,wait=off", "-kernel", str(kernel), "-initrd", str(initrd),
           "-append", f"console={machine.console} nokaslr {append}".strip()]
    if numa_nodes > 1:
        for node in range(numa_nodes):
            if cpus >= numa_nodes:
                first, last = node * cpus // numa_nodes, (node + 1) * cpus // numa_nodes - 1
            else:
                first, last = (0, cpus - 1) if node == 0 else (0, -1)
            where = "" if last < first else f",cpus={first}" + (f"-{last}" if last > first else "")
            cmd += ["-object", f"memory-backend-ram,id=numa{node},size={1024 // numa_nodes}M",
                    "-numa", f"node,nodeid={node},memdev=numa{node}{where}"]
    if supports_device(arch, "vmcoreinfo"):
        cmd += ["-device", "vmcoreinfo"]
    return cmd + list(QEMU_DEVICES) + list(extra)


def default_cpus(arch: str, numa_nodes: int) -> int:
    """One vCPU; riscv64 with NUMA one per node: its virt machine makes each node a socket of harts and
    refuses one without any ("discontinuous hartids in socket1")."""
    return numa_nodes if arch == "riscv64" and numa_nodes > 1 else 1


def _socket_dir(run_dir: Path) -> tuple[Path, Path | None]:
    """(directory of the QMP and console sockets, extra directory to remove) — a short /tmp
    directory if RUN_DIR's socket paths would be too long."""
    if len(str(run_dir / "console.sock")) <= MAX_UNIX_PATH:
        return run_dir, None
    short = Path(tempfile.mkdtemp(prefix="ptinspect-"))
    return short, short


def _start(cmd_for_port: Callable[[int], list[str]], run_dir: Path, qmp: str, console: str, detach: bool,
           name: str) -> tuple[subprocess.Popen, int]:
    """Start QEMU on a free gdb port (retrying when the port was taken meanwhile); wait until QMP answers."""
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        Path(qmp).unlink(missing_ok=True)
        Path(console).unlink(missing_ok=True)
        with open(run_dir / "qemu.log", "wb") as log:
            proc = subprocess.Popen(cmd_for_port(port), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, preexec_fn=None if detach else _die_with_parent)
        try:
            wait_for_qmp(qmp, START_TIMEOUT, alive=functools.partial(_running, proc)).close()
            return proc, port
        except QmpError:
            _kill(proc)
            if "Address already in use" not in tail(run_dir / "qemu.log"):
                raise _failure(name, "QEMU did not start", run_dir) from None
    raise _failure(name, f"no free gdb port after {PORT_ATTEMPTS} attempts", run_dir)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def read_manifest(serial: Path) -> tuple[str | None, str | None]:
    """(manifest JSON text, failure line) found so far in the serial log."""
    text = serial.read_bytes().decode(errors="replace").replace("\r", "") if serial.exists() else ""
    for mark in FAILURE_MARKS:
        if (at := text.find(mark)) >= 0:
            return None, text[at:].split("\n", 1)[0]
    begin = text.find(BEGIN + "\n")
    end = text.find("\n" + END, begin)
    if begin < 0 or end < 0:
        return None, None
    return text[begin + len(BEGIN) + 1:end], None


def _wait_manifest(proc: subprocess.Popen, serial: Path, timeout: float, name: str, run_dir: Path) -> dict:
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        size = serial.stat().st_size if serial.exists() else 0
        body, failure = read_manifest(serial) if size != seen else (None, None)
        seen = size
        if failure:
            time.sleep(2)  # let the rest of the report reach the log
            raise _failure(name, f"boot failed: {failure}", run_dir)
        if body is not None:
            try:
                manifest = json.loads(body)
            except ValueError as exc:
                raise _failure(name, f"the workload's manifest is not JSON: {exc}", run_dir) from None
            if not isinstance(manifest, dict) or not isinstance(manifest.get("pid"), int):
                raise _failure(name, "the workload's manifest has no integer \"pid\"", run_dir)
            return manifest
        if proc.poll() is not None:
            raise _failure(name, f"QEMU exited (status {proc.returncode}) before the manifest", run_dir)
        if time.monotonic() > deadline:
            raise _failure(name, f"no manifest within {timeout:.0f} s", run_dir)
        time.sleep(0.25)


def _kvm_probe(arch: str, kernel: Path) -> bool:
    """Whether KERNEL starts under KVM here: it must reach its no-root panic (QEMU exits), not a KVM error."""
    with tempfile.TemporaryDirectory(prefix="ptinspect-kvm-") as tmp:
        log, err = Path(tmp) / "serial.log", Path(tmp) / "qemu.log"
        cmd = [QEMU[arch], *MACHINES[arch].args, "-accel", "kvm", "-m", "256M", "-nodefaults", "-display", "none",
               "-no-reboot", "-serial", f"file:{log}", "-kernel", str(kernel),
               "-append", f"console={MACHINES[arch].console} panic=-1"]
        with open(err, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + KVM_PROBE_TIMEOUT
        try:  # a broken KVM stops the guest ("KVM internal error") and QEMU stays up: watch its output
            while proc.poll() is None and time.monotonic() < deadline and "KVM internal error" not in tail(err):
                time.sleep(0.2)
        finally:
            _kill(proc)
        return "Kernel panic" in tail(log)


def choose_accel(accel: str, arch: str, kernel: Path, la57: bool) -> str:
    """tcg or kvm for ACCEL (auto: KVM when the guest is native, /dev/kvm opens and a probe boot of
    KERNEL works; the verdict is cached per host boot). LA57 needs TCG (hosts may lack it)."""
    if accel not in ("auto", "tcg", "kvm"):
        raise VMError(f"unknown accelerator {accel!r}; choose auto, tcg or kvm")
    if accel == "tcg" or (accel == "auto" and (la57 or arch != host_arch() or not os.access("/dev/kvm", os.W_OK))):
        return "tcg"
    verdicts = cache_dir() / "kvm-probe.json"
    key = f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()} {kernel} {kernel.stat().st_size}"
    with locked(verdicts.with_suffix(".lock"), KVM_PROBE_TIMEOUT * 2):
        known = json.loads(verdicts.read_text()) if verdicts.exists() else {}
        if key not in known:
            known[key] = _kvm_probe(arch, kernel)
            verdicts.write_text(json.dumps(known, indent=1))
            progress(f"KVM probe with {kernel}: {'works' if known[key] else 'fails; TCG it is'}")
    if known[key]:
        return "kvm"
    if accel == "kvm":
        raise VMError(f"KVM does not run {kernel} on this host (probe failed); use --accel tcg")
    return "tcg"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while booting, so cleanup runs (main thread only)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def boot(arch: str, series: str = "7.2", image: Path | None = None, vmlinux: Path | None = None,
         initrd: Path | None = None, append: str | None = None, qemu_args: Sequence[str] = (),
         timeout: float | None = None, name: str | None = None, la57: bool = False, accel: str = "auto",
         detach: bool = True, numa_nodes: int = 1, cpus: int | None = None) -> VM:
    """Boot ARCH (the manifest kernel of SERIES, or IMAGE) and return the VM once the manifest arrived.

    The initramfs is the workload helper's build_initramfs() unless INITRD is given. ACCEL is tcg,
    kvm, or auto (KVM only when it really runs this kernel). DETACH=False ties QEMU's life to this
    process (tests). On any failure QEMU is killed and VMError raised with the serial log's tail.
    """
    if arch not in MACHINES:
        raise VMError(f"unknown arch {arch!r}; choose one of {', '.join(MACHINES)}")
    if numa_nodes not in (1, 2, 4):
        raise VMError(f"--numa-nodes {numa_nodes}: choose 1, 2 or 4 (the 1 GiB split evenly)")
    if cpus is not None and not 1 <= cpus <= MAX_CPUS:
        raise VMError(f"--cpus {cpus}: choose 1 to {MAX_CPUS} (each vCPU is a host thread under TCG)")
    if cpus is not None and default_cpus(arch, numa_nodes) > cpus:
        raise VMError(f"--cpus {cpus}: {arch} with {numa_nodes} NUMA nodes needs a vCPU per node "
                      f"(QEMU's riscv64 virt machine refuses a node without harts)")
    if la57 and arch != "x86_64":
        raise VMError("--la57 applies to x86_64 only")
    check_system([arch])
    for what, path in (("kernel image", image), ("initrd", initrd), ("vmlinux", vmlinux)):
        if path is not None and not Path(path).is_file():
            raise VMError(f"{what} {path} does not exist")
    kimg, kernel, vmlinux, initrd = _kernel(arch, series, image, vmlinux, initrd)
    accel = choose_accel(accel, arch, kernel, la57)
    timeout = timeout or MACHINES[arch].boot_timeout
    name = _reserve_name(name, kimg.id if kimg and image is None else f"custom-{arch}")
    run_dir = subdir("vms", name)
    shutil.rmtree(run_dir)  # the previous boot of this name
    run_dir.mkdir()
    sockets, short_dir = _socket_dir(run_dir)
    qmp, console = str(sockets / "qmp.sock"), str(sockets / "console.sock")
    vm = VM(name=name, arch=arch, kernel_release=kimg.release if kimg and image is None else "?", qemu_pid=0,
            gdb="", qmp=qmp, vmlinux=str(vmlinux) if vmlinux else None, workload_pid=None,
            manifest=str(run_dir / "manifest.json"), serial_log=str(run_dir / "serial.log"),
            run_dir=str(run_dir), accel=accel, started=time.time(), console=console)
    try:
        with _sigterm_as_interrupt():
            progress(f"{name}: booting {kernel} ({arch}, {accel}, timeout {timeout:.0f} s)")
            start = time.monotonic()
            vm.process, port = _start(
                lambda port: qemu_command(arch, kernel, initrd, append or "", Path(vm.serial_log), qmp, console,
                                          port, la57, accel, qemu_args, numa_nodes, cpus),
                run_dir, qmp, console, detach, name)
            vm.qemu_pid, vm.gdb = vm.process.pid, f"127.0.0.1:{port}"
            vm.save()  # from here `vm list` / `vm stop` see it, even if this process dies
            manifest = _wait_manifest(vm.process, Path(vm.serial_log), timeout, name, run_dir)
            Path(vm.manifest).write_text(json.dumps(manifest, indent=1))
            vm.workload_pid = manifest["pid"]
            vm.kernel_release = manifest.get("kernel_release", vm.kernel_release)
            vm.save()
            progress(f"{name}: manifest after {time.monotonic() - start:.1f} s; workload pid {vm.workload_pid}")
            return vm
    except BaseException:
        if vm.process is not None:
            _kill(vm.process)
        state_file(name).unlink(missing_ok=True)
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)
        raise
