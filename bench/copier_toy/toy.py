"""A toy of the lean copier (not run by make test): python bench/copier_toy/toy.py seq|par NEW_DEST_DIR.

seq copies the bench small set (10,000 x 4 KiB) in this process; par opens and checks each source here and
passes the descriptors in batches (SCM_RIGHTS) to child.py, which creates, copies and renames."""

import os
import resource
import socket
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 3)[0] + "/lib")
from fileconveyor import beneath
from fileconveyor.sourcefile import copy_fd

mode, dest = sys.argv[1], sys.argv[2]
SRC = b"/tmp/fc-pipeline-bench/src-small-10000"
rels = []
for d in sorted(os.listdir(SRC)):
    for f in sorted(os.listdir(SRC + b"/" + d)):
        rels.append((d, f))
root = os.open(SRC, os.O_RDONLY | os.O_DIRECTORY)
os.makedirs(dest)
droot = os.open(dest, beneath.PATH_FLAGS)
dirs = {}
for d, _ in rels:
    if d not in dirs:
        os.mkdir(d, dir_fd=droot)
        dirs[d] = beneath.open_dir(d, droot, beneath.PATH_FLAGS)
READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
BATCH = int(os.environ.get("BATCH", 100))
t0 = time.time()
c0 = os.times()
if mode == "seq":
    for d, f in rels:
        src = beneath.open_file(root, SRC, d + b"/" + f, READ)
        st = os.fstat(src)
        tmp = b".fc-" + f + b".tmp"
        fd = os.open(tmp, CREATE, 0o666, dir_fd=dirs[d])
        copy_fd(src, fd, st.st_size)
        os.close(fd)
        os.fstat(src)
        os.replace(tmp, f, src_dir_fd=dirs[d], dst_dir_fd=dirs[d])
        os.close(src)
else:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p = subprocess.Popen(
        [sys.executable, "-I", "-S", "" + __file__.rsplit("/", 1)[0] + "/child.py", str(b.fileno()), str(os.getpid())],
        pass_fds=[b.fileno()],
    )
    b.close()
    t1 = time.time()
    pend = 0
    batch = []
    fds = []
    dmap = {}
    dl = []

    def send():
        global batch, fds, dmap, dl, pend
        msg = b"%d\n" % len(dl) + b"\n".join(batch)
        socket.send_fds(a, [msg], dl + fds)
        for x in fds:
            os.close(x)
        batch, fds, dmap, dl = [], [], {}, []
        pend += 1

    for d, f in rels:
        src = beneath.open_file(root, SRC, d + b"/" + f, READ)
        st = os.fstat(src)
        i = dmap.get(d)
        if i is None:
            i = dmap[d] = len(dl)
            dl.append(dirs[d])
        batch.append(b"%d %d %d .fc-%s.tmp %s" % (i, st.st_size, st.st_mtime_ns, f, f))
        fds.append(src)
        if len(batch) >= BATCH:
            send()
            if pend > 2:
                a.recv(1 << 16)
                pend -= 1
    if batch:
        send()
    while pend:
        a.recv(1 << 16)
        pend -= 1
    a.close()
    p.wait()
c1 = os.times()
t1 = time.time()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(
    f"{mode} wall {t1 - t0:.3f} main user {c1.user - c0.user:.3f} sys {c1.system - c0.system:.3f}",
    f"child user {ru.ru_utime:.3f} sys {ru.ru_stime:.3f}",
)
