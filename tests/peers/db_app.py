"""An app that uses the database credential ephemera hands it, with psycopg.

GET /invoices (through Envoy, with the credential in `x-db-dsn`): connects,
reads the `invoices` table, tries another table and a write, and keeps the
connection open. GET /after (straight to the app, once the transaction is
closed): uses the kept connection, then tries a new one with the same DSN.
Each answer is JSON (the first echoes the DSN, for the test to look for it
where it must not be); a failure is PostgreSQL's SQLSTATE and message.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

kept = {}


def attempt(action):
    try:
        return {"ok": action()}
    except psycopg.Error as e:
        return {"sqlstate": e.sqlstate, "error": str(e).strip().splitlines()[0]}


def during(dsn):
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    kept["conn"], kept["dsn"] = conn, dsn
    return {
        "dsn": dsn,
        "read": attempt(lambda: conn.execute("SELECT id, total FROM invoices ORDER BY id").fetchall()),
        "other_table": attempt(lambda: conn.execute("SELECT * FROM customers").fetchall()),
        "write": attempt(lambda: conn.execute("INSERT INTO invoices VALUES (9, 9)").rowcount),
    }


def after():
    def reconnect():
        psycopg.connect(kept["dsn"], connect_timeout=5).close()
        return True

    return {
        "kept_connection": attempt(lambda: kept["conn"].execute("SELECT count(*) FROM invoices").fetchall()),
        "new_connection": attempt(reconnect),
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/invoices":
            dsn = self.headers.get("x-db-dsn")
            body = during(dsn) if dsn else {"error": "no credential"}
        elif self.path == "/after":
            body = after()
        else:
            body = {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", flush=True)
    server.serve_forever()
