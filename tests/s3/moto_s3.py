"""A local S3 (moto) for the `s3` tests. Loopback only, one request at a time.

Prints `PORT <n>` once bucket(s) exist; exits when its stdin closes (the test
process that spawned it ended) or on SIGTERM.
Usage: python3 moto_s3.py [--port N] [BUCKET ...]
"""
import argparse, os, sys, threading, urllib.request

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)  # 0: any free port
    ap.add_argument("--no-stdin-watch", action="store_true")
    ap.add_argument("buckets", nargs="*", default=["lancebranch-test"])
    args = ap.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    # threaded=False: moto's If-None-Match check-then-write (Lance's commit
    # protocol) is atomic only if requests are served one at a time.
    srv = make_server("127.0.0.1", args.port, app, threaded=False)
    port = srv.server_port
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    for b in args.buckets:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{b}", method="PUT")
        urllib.request.urlopen(req, timeout=30).read()
    print(f"PORT {port}", flush=True)
    if args.no_stdin_watch:
        threading.Event().wait()
    else:
        sys.stdin.read()  # EOF: the parent is gone
    os._exit(0)


if __name__ == "__main__":
    main()
