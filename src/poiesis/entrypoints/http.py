"""The HTTP server's own refusals in the API's one error body.

uvicorn answers a request it cannot parse (a request line or headers past its limits, broken
framing) before any application code runs, in plain text. This protocol sends the same 400 as the
JSON error body every other error has, so a client parses one kind of error.
"""

from __future__ import annotations

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class JsonErrorsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = msgspec.json.encode({"msg": f"the request could not be parsed: {msg}", "status_code": 400})
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
