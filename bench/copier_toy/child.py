"""The toy copier child of bench/copier_toy/toy.py."""

import os
import socket
import sys


def main():
    import ctypes

    ppid = int(sys.argv[2])
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != ppid:
        os._exit(0)
    sock = socket.socket(fileno=int(sys.argv[1]))
    CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 256)
        except OSError:
            return
        if not msg:
            return
        # msg: lines "dirindex size mtime_ns tmp name"
        out = []
        lines = msg.split(b"\n")
        ndirs = int(lines[0])
        dirs = fds[:ndirs]
        srcs = fds[ndirs:]
        for i, line in enumerate(lines[1:]):
            d, size, mt, tmp, name = line.split(b" ")
            dfd = dirs[int(d)]
            src = srcs[i]
            size = int(size)
            try:
                fd = os.open(tmp, CREATE, 0o666, dir_fd=dfd)
                try:
                    off = 0
                    while off < size:
                        n = os.sendfile(fd, src, off, 1 << 30)
                        if not n:
                            break
                        off += n
                finally:
                    os.close(fd)
                st = os.fstat(src)
                if off != size or st.st_size != size or st.st_mtime_ns != int(mt):
                    os.unlink(tmp, dir_fd=dfd)
                    out.append(b"-1")
                else:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    out.append(b"0")
            except OSError as e:
                out.append(b"%d" % e.errno)
            os.close(src)
        for d in dirs:
            os.close(d)
        sock.sendall(b" ".join(out) + b"\n")


main()
