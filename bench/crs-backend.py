#!/usr/bin/env python3
"""The backend of bench/crs-regression.sh: what the Core Rule Set's test setup puts
behind the WAF, written for this bench.

- POST /reflect with a JSON object answers with what it asks for: "status" (default
  200), "headers" (an object), and the body from "body" (text) or "encodedBody"
  (base64). Without a Content-Type in "headers" the type is guessed from the body
  (text/html for markup, text/plain otherwise), so the WAFs' response rules see it.
- Every other request: 200 with an empty body.

Usage: crs-backend.py PORT   (listens on 127.0.0.1 only)
"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe",
               b"<h1", b"<div", b"<font", b"<table", b"<a ", b"<style", b"<title",
               b"<b>", b"<br", b"<p>", b"<!--")


def guess_type(body: bytes) -> str:
    head = body.lstrip().lower()
    if head.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if head.startswith(HTML_STARTS):
        return "text/html; charset=utf-8"
    return "text/plain; charset=utf-8"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def answer(self):
        body_in = self.read_body()
        status, headers, body = 200, {}, b""
        if self.command == "POST" and self.path.split("?")[0] == "/reflect":
            try:
                spec = json.loads(body_in or b"{}")
                status = int(spec.get("status") or 200)
                headers = dict(spec.get("headers") or {})
                if spec.get("encodedBody"):
                    body = base64.b64decode(spec["encodedBody"])
                elif spec.get("body") is not None:
                    body = str(spec["body"]).encode()
            except (ValueError, TypeError, AttributeError):
                status, headers, body = 400, {}, b"bad reflect spec\n"
            if body and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = guess_type(body)
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name):
        # Any method: do_GET, do_POST, do_PROPFIND, ...
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
