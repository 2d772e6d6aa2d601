"""The copier process (transporters/copier.py): small copies into a local folder, beside fc-transport's main thread.

Run as ``python -I -S copier_child.py SOCKET_FD PARENT_PID``: it imports nothing of File Conveyor, and trusts only its
parent, which opened and checked everything it is given.  Each request on the socket (a SOCK_SEQPACKET pair) is one
batch: its descriptors (the batch's destination directories, then one source per file, both opened by fc-transport
beneath their roots without following links) and the fields, NUL-separated: the number of directories, then
``dir size mtime_ns tmp name`` per file (names without slashes).
Per file: the temporary name created in the directory (O_EXCL | O_NOFOLLOW: never written through what is there),
the bytes copied in the kernel, the source looked at again (the size and mtime it was opened with: a copy torn by a
writer never takes the final name), then the rename in that same directory.  The answer is one status per file:
0, an errno, or -1 (the source changed); a file that fails leaves no temporary name behind.  The parent's death
kills it (PR_SET_PDEATHSIG), and an end of file on the socket ends it.
"""

import os
import socket
import sys

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHANGED = -1


def copy_one(src: int, dfd: int, size: int, mtime_ns: int, tmp: bytes, name: bytes) -> int:
    try:
        out = os.open(tmp, _CREATE, 0o666, dir_fd=dfd)
    except OSError as exc:
        return exc.errno or 5
    try:
        try:
            offset = 0
            while offset < size:
                sent = os.sendfile(out, src, offset, 1 << 30)
                if not sent:
                    break
                offset += sent
        finally:
            os.close(out)
        st = os.fstat(src)
        if offset != size or st.st_size != size or st.st_mtime_ns != mtime_ns:
            status = CHANGED
        else:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            return 0
    except OSError as exc:
        status = exc.errno or 5
    try:
        os.unlink(tmp, dir_fd=dfd)
    except OSError:
        pass
    return status


def serve(sock: socket.socket) -> None:
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1024)
        if not msg:
            return
        try:
            fields = msg.split(b"\0")
            ndirs = int(fields[0])
            answers = []
            for i in range(len(fields) // 5):
                d, size, mtime_ns, tmp, name = fields[1 + 5 * i : 6 + 5 * i]
                answers.append(b"%d" % copy_one(fds[ndirs + i], fds[int(d)], int(size), int(mtime_ns), tmp, name))
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(b" ".join(answers))


def main() -> None:
    parent = int(sys.argv[2])
    try:
        import ctypes  # only for prctl: never outlive fc-transport, not even by the batch in hand

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (ImportError, OSError, AttributeError):
        pass  # not Linux: the end of file on the socket ends it, after the batch in hand
    if os.getppid() != parent:
        return  # the parent died before prctl
    try:
        serve(socket.socket(fileno=int(sys.argv[1])))
    except (OSError, ValueError):
        pass  # the parent went away, or sent garbage: it copies on without us


if __name__ == "__main__":
    main()
