"""Start one container process: enter the pod's network namespace, build a private root
filesystem, mount the volumes, drop to the container's user, exec the command.

Runs as root, as `python -I -S launch.py SPEC.json ERROR_FD`, standard library only (it must start
fast and must not import the project). It ends in `execve`, so the node agent's child *is*
the container process: its pid, exit status and signals are the container's.

The root filesystem is an overlay whose lower layer is the machine's `/` and whose upper
layer is a tmpfs private to this container, so the container sees the installed
environment at its real paths, can create mount points anywhere, and can never change a
host file (a read-only root is enforced when asked). /proc, /sys, /dev, /tmp and /run are
fresh. Everything is in a mount namespace of its own, so all of it vanishes with the process.

Exit status 128 with a message written to file descriptor ERROR_FD means the container could not
be started (the agent reports StartError with that message).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
ERROR_FD = int(sys.argv[2]) if len(sys.argv) > 2 else 2
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class StartError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise StartError(f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def makedirs_inside(path: str, allowed_devs: set[int]) -> None:
    """mkdir -p, refusing to create anything on a filesystem shared with the host."""
    missing = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    if missing and os.stat(current).st_dev not in allowed_devs:
        raise StartError(
            f"mount point {path} does not exist and {current} is on a host filesystem "
            "shared with the pod; use a path under an existing folder of the image or /tmp"
        )
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)


def setup_root(spec: dict) -> None:
    scratch = spec["scratch"]
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700,size=" + spec["rootSize"])
    upper, work, root = (f"{scratch}/{d}" for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.mkdir(d, 0o755)
    mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")
    # Host filesystems the container needs beyond `/` (e.g. the environment on its own disk).
    for host_path in spec.get("hostMounts", []):
        target = root + host_path
        os.makedirs(target, exist_ok=True)
        mount(host_path, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("sysfs", f"{root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID, "mode=755,size=64k")
    for name in DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    for d in ("pts", "shm"):
        os.mkdir(f"{root}/dev/{d}", 0o755)
    mount(
        "devpts",
        f"{root}/dev/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620",
    )
    os.symlink("pts/ptmx", f"{root}/dev/ptmx")
    mount("tmpfs", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{root}/dev/{name}")
    os.symlink("/proc/self/fd", f"{root}/dev/fd")
    mount(
        "tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=" + spec["tmpSize"]
    )
    mount("tmpfs", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=16m")
    os.chdir(root)
    os.mkdir(".oldroot", 0o700)
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise StartError(f"unsupported machine {os.uname().machine}")
    _check(libc.syscall(nr, b".", b".oldroot"), "pivot_root")
    os.chdir("/")


def bind_hidden_host_paths(spec: dict) -> None:
    """The environment may live under /tmp or /run (a checkout there), which the
    container's own tmpfs, or a volume mounted on /tmp, hides: bind those folders back,
    read-only, last, so nothing mounted later covers them."""
    for host_path in spec.get("hiddenHostPaths", []):
        os.makedirs(host_path, exist_ok=True)
        mount("/.oldroot" + host_path, host_path, None, MS_BIND | MS_REC)
        mount(None, host_path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def mount_volumes(spec: dict) -> None:
    ours = {os.stat("/").st_dev, os.stat("/tmp").st_dev, os.stat("/run").st_dev}
    for m in spec.get("mounts", []):
        source = "/.oldroot" + m["source"]
        target = m["target"]
        if os.path.isdir(source):
            makedirs_inside(target, ours)
        else:
            makedirs_inside(os.path.dirname(target), ours)
            if not os.path.lexists(target):
                open(target, "w").close()
        mount(source, target, None, MS_BIND | MS_REC)
        if m.get("readOnly"):
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    etc = spec.get("podEtc")
    if etc:
        # /etc/hosts and /etc/resolv.conf are links into a folder the agent keeps current
        # (replaced atomically, so readers never see half a file).
        os.makedirs("/run/.pod", exist_ok=True)
        mount("/.oldroot" + etc, "/run/.pod", None, MS_BIND)
        mount(None, "/run/.pod", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        for name in ("hosts", "resolv.conf", "hostname"):
            path = f"/etc/{name}"
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(f"/run/.pod/{name}", path)


def open_traversal(paths: list[str]) -> None:
    """Let the container's user traverse to its environment (e.g. a Python under /root):
    adds o+x to folders on the overlay only, so the host's permissions never change."""
    root_dev = os.stat("/").st_dev
    for path in paths:
        current = "/"
        for part in [p for p in path.split("/") if p]:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                break
            if not os.path.isdir(current) or os.path.islink(current):
                break
            if st.st_dev == root_dev and not st.st_mode & 0o001:
                os.chmod(current, (st.st_mode & 0o7777) | 0o001)


def main() -> None:
    with contextlib.suppress(OSError):
        if ERROR_FD > 2:
            os.set_inheritable(ERROR_FD, False)  # closed by a successful exec
    try:
        with open(sys.argv[1]) as f:
            spec = json.load(f)
        if spec.get("netns"):
            fd = os.open(spec["netns"], os.O_RDONLY)
            _check(libc.setns(fd, CLONE_NEWNET), "setns(net)")
            os.close(fd)
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        hostname = spec.get("hostname", "")[:63].encode()
        _check(libc.sethostname(hostname, len(hostname)), "sethostname")
        setup_root(spec)
        mount_volumes(spec)
        bind_hidden_host_paths(spec)
        open_traversal(spec.get("traverse", []))
        workdir = spec.get("workingDir") or "/"
        if not os.path.isdir(workdir):
            makedirs_inside(workdir, {os.stat("/").st_dev, os.stat("/tmp").st_dev})
        _check(libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
        os.rmdir("/.oldroot")
        if spec.get("readOnlyRoot"):
            mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.chdir(workdir)
        os.umask(0o022)
        os.setgroups(spec.get("groups", []))
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        # Die with the agent: a container never outlives the process that watches it
        # (set after setuid, which clears it).
        _check(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "pdeathsig")
        if os.getppid() == 1:
            raise StartError("the node agent is gone")
        if spec.get("noNewPrivs", True):
            _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        argv = spec["argv"]
        env = spec["env"]
    except (StartError, OSError, KeyError, ValueError) as error:
        _fail(f"cannot set up the container: {error}")
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        _fail(f"cannot run {argv[0]!r}: {error.strerror}")


def _fail(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(ERROR_FD, message.encode())
    print(f"modelship node agent: {message}", file=sys.stderr, flush=True)
    os._exit(128)


if __name__ == "__main__":
    main()
