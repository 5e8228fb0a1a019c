"""A tiny upstream app for ephemera's demo and tests: answers every request
with a JSON echo of what it received, and logs one JSON line per request.

usage: echo_app.py PORT [--status N]
A request header x-echo-delay-ms: N makes it answer N ms late;
x-echo-reflect: a,b makes it send request headers a and b back as response
headers, values and all (a careless app that reflects what it was given).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


LOG_LOCK = threading.Lock()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200
    # One write per response and no Nagle: otherwise headers and body go out
    # in two segments and delayed ACKs add ~40 ms per keep-alive request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def _echo(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_list": [[k.lower(), v] for k, v in self.headers.items()],
            "body": body,
        }
        with LOG_LOCK:  # one whole line per request, even from many threads
            sys.stdout.write(json.dumps(seen) + "\n")
            sys.stdout.flush()
        # x-echo-delay-ms: hold the answer (a slow app), after logging the request.
        time.sleep(int(self.headers.get("x-echo-delay-ms") or 0) / 1000)
        payload = json.dumps(seen).encode()
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        reflect = (self.headers.get("x-echo-reflect") or "").split(",")
        for name in filter(None, (n.strip() for n in reflect)):
            for value in self.headers.get_all(name) or []:
                self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _echo

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1])
    if "--status" in sys.argv:
        Echo.status = int(sys.argv[sys.argv.index("--status") + 1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    print(json.dumps({"listening": port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
