"""d_path() of a file: dentries and mounts up to the global root, or the name d_op->d_dname makes."""
from __future__ import annotations

from ..kernel import KernelError
from ..layout import KernelLayout
from .memory import MAX_STRING, KernelMemory, ReadVa, _Fields

MAX_PATH_DEPTH = 4096  # PATH_MAX components of at least one byte


class Paths(KernelMemory):
    """fs/d_path.c and fs/dcache.c as /proc/PID/maps uses them."""

    def __init__(self, layout: KernelLayout, read_va: ReadVa, kaslr_offset: int, arch: str) -> None:
        super().__init__(layout, read_va, kaslr_offset, arch)
        m = layout.members
        dname = m["dentry.d_name"][0]
        # The whole dentry: a short name is stored inside it (d_iname, 7.2 d_shortname), read with it.
        self._dentry = _Fields("dentry", {
            "d_parent": m["dentry.d_parent"], "d_op": m["dentry.d_op"], "d_inode": m["dentry.d_inode"],
            "d_hash_pprev": (m["dentry.d_hash"][0] + m["hlist_bl_node.pprev"][0], m["hlist_bl_node.pprev"][1]),
            "len": (dname + m["qstr.len"][0], m["qstr.len"][1]),
            "name": (dname + m["qstr.name"][0], m["qstr.name"][1])}, whole=layout.sizes["dentry"])
        vfs = m["mount.mnt"][0]
        self._mount = _Fields("mount", {
            "mnt_parent": m["mount.mnt_parent"], "mnt_mountpoint": m["mount.mnt_mountpoint"],
            "mnt_root": (vfs + m["vfsmount.mnt_root"][0], m["vfsmount.mnt_root"][1])})
        fpath = m["file.f_path"][0]
        self._file = _Fields("file", {"mnt": (fpath + m["path.mnt"][0], m["path.mnt"][1]),
                                      "dentry": (fpath + m["path.dentry"][0], m["path.dentry"][1])})
        self._files: dict[int, str] = {}
        self._dname_ops: dict[int, int] = {}
        self._dentries: dict[int, tuple[dict[str, int], bytes]] = {}
        self._mounts: dict[int, dict[str, int]] = {}

    def _dentry_at(self, dentry: int) -> tuple[dict[str, int], bytes]:
        if dentry not in self._dentries:
            self._dentries[dentry] = self._dentry.read_span(self, dentry)
        return self._dentries[dentry]

    def _mount_at(self, mount: int) -> dict[str, int]:
        if mount not in self._mounts:
            self._mounts[mount] = self._mount.read(self, mount)
        return self._mounts[mount]

    def _d_path(self, file: int) -> str:
        """d_path() of file->f_path (fs/d_path.c) from the global root: the name d_op->d_dname
        makes for pseudo files, else the path across mounts, " (deleted)" when unlinked."""
        if file not in self._files:
            f = self._file.read(self, file)
            self._files[file] = self._path(f["mnt"] - self._member("mount.mnt"), f["dentry"], file)
        return self._files[file]

    def _path(self, mount: int, dentry: int, file: int) -> str:
        d, blob = self._dentry_at(dentry)
        is_root = d["d_parent"] == dentry
        dname = self._d_dname(d["d_op"])
        if dname and (not is_root or dentry != self._mount_at(mount)["mnt_root"]):
            return self._dname_name(dname, dentry, d, blob)
        deleted = not d["d_hash_pprev"] and not is_root  # d_unlinked (include/linux/dcache.h)
        components: list[bytes] = []
        for _ in range(MAX_PATH_DEPTH):
            mnt = self._mount_at(mount)
            if dentry == mnt["mnt_root"]:
                parent = mnt["mnt_parent"]
                if parent == mount:
                    break
                dentry, mount = mnt["mnt_mountpoint"], parent
                continue
            d, blob = self._dentry_at(dentry)
            if d["d_parent"] == dentry:
                break
            components.append(self._dentry_name(dentry, d, blob))
            dentry = d["d_parent"]
        else:
            raise KernelError(f"the path of file {file:#x} is deeper than {MAX_PATH_DEPTH}: a dentry or mount cycle")
        path = (b"/" + b"/".join(reversed(components))).decode(errors="replace")
        return path + " (deleted)" if deleted else path

    def _d_dname(self, d_op: int) -> int:
        """d_op->d_dname, 0 if none."""
        if not d_op:
            return 0
        if d_op not in self._dname_ops:
            self._dname_ops[d_op] = self._ptr(d_op + self._member("dentry_operations.d_dname"),
                                              f"dentry_operations.d_dname at {d_op:#x}")
        return self._dname_ops[d_op]

    def _dname_name(self, dname: int, dentry: int, d: dict[str, int], blob: bytes) -> str:
        """What d_op->d_dname writes: simple_dname "/name (deleted)" (shmem, hugetlbfs and memfd
        files), anon_inodefs_dname "anon_inode:name"; another d_dname is named as not derived."""
        name = self._dentry_name(dentry, d, blob).decode(errors="replace")
        symbols = self.layout.symbols
        if dname == symbols.get("simple_dname", -1) + self.kaslr_offset:
            return f"/{name} (deleted)"
        if dname == symbols.get("anon_inodefs_dname", -1) + self.kaslr_offset:
            return f"anon_inode:{name}"
        return f"[{self._fs_type(d['d_inode'])} file {name!r}, named by d_dname {dname:#x}: not derived]"

    def _dentry_name(self, dentry: int, d: dict[str, int], whole: bytes) -> bytes:
        length, name = d["len"], d["name"]
        if length > MAX_STRING:
            raise KernelError(f"dentry {dentry:#x} has a name of {length} bytes")
        if dentry <= name and name + length <= dentry + len(whole):  # a short name, inside the dentry
            return whole[name - dentry:name - dentry + length]
        return self.read(name, length, f"d_name of dentry {dentry:#x}")

    def _fs_type(self, inode: int) -> str:
        """d_inode->i_sb->s_type->name."""
        m = self.layout.members
        sb = self._ptr(inode + m["inode.i_sb"][0], f"inode.i_sb at {inode:#x}")
        fstype = self._ptr(sb + m["super_block.s_type"][0], f"super_block.s_type at {sb:#x}")
        name = self._ptr(fstype + m["file_system_type.name"][0], f"file_system_type.name at {fstype:#x}")
        return self._string(name, f"file system type name at {name:#x}").decode(errors="replace")
