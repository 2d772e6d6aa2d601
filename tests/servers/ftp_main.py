"""Run a pyftpdlib server: ftp_main.py PORT HOME [CERT KEY].  User and password come from FTP_USER and
FTP_PASSWORD.  With CERT and KEY it speaks explicit FTPS (AUTH TLS) and requires TLS before login."""

from __future__ import annotations

import os
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main() -> None:
    port, home = int(sys.argv[1]), sys.argv[2]
    authorizer = DummyAuthorizer()
    authorizer.add_user(os.environ["FTP_USER"], os.environ["FTP_PASSWORD"], home, perm="elradfmwMT")
    handler: type[FTPHandler] = FTPHandler
    if len(sys.argv) > 3:
        from pyftpdlib.handlers import TLS_FTPHandler

        TLS_FTPHandler.certfile, TLS_FTPHandler.keyfile = sys.argv[3], sys.argv[4]
        TLS_FTPHandler.tls_control_required = TLS_FTPHandler.tls_data_required = True
        handler = TLS_FTPHandler
    handler.authorizer = authorizer
    handler.auth_failed_timeout = 0.2  # pyftpdlib waits 3 s before a 530 by default; keep the suite quick
    FTPServer(("127.0.0.1", port), handler).serve_forever(handle_exit=False)


if __name__ == "__main__":
    main()
