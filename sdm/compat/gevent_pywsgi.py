"""Overrides of gevent.pywsgi's request handler (written for gevent 23.9 to 26.9; tested with 26.9.0).

Why the public API does not suffice:

- ``WSGIHandler.handle_one_request`` answers a request line longer than ``pywsgi.MAX_REQUEST_LINE``
  itself, with a fixed 414 that has an empty body. Its docstring documents the ``(status, complete
  response)`` tuple it returns then; replacing that tuple is the only way to send our JSON instead.
- ``WSGIHandler._handle_client_error`` is where pywsgi turns a request it cannot parse into its
  canned text 400 (and prints a traceback for errors that are not ValueErrors). The docstring of
  ``handle_one_request`` calls it an experimental hook for subclasses; nothing public replaces it.
- ``WSGIHandler._write_with_headers`` sends the status line and headers, then the body, with two
  ``_sendall`` calls: two system calls and two packets for every short JSON answer, a tenth of
  the cost of a request. There is no public option to send them together.

``PywsgiOverrides`` is a mixin for a handler class based on ``pywsgi.WSGIHandler``; a subclass
says what to answer through the two public hooks ``request_line_refused`` and ``client_error``.
"""

from __future__ import annotations

from typing import Tuple

from gevent import pywsgi

REQUEST_LINE_TOO_LONG = "414"        # the status pywsgi's handle_one_request returns for a long line


class PywsgiOverrides(pywsgi.WSGIHandler):
    """pywsgi's handler with replaceable refusals and one send for head and short body."""

    ONE_SEND_MAX = 64 * 1024   # bodies up to this size go out with their headers in one send

    def request_line_refused(self) -> bytes:
        """The complete response to a request line over ``pywsgi.MAX_REQUEST_LINE`` bytes."""
        raise NotImplementedError

    def client_error(self, ex: BaseException) -> Tuple[str, bytes]:
        """(status, complete response) for a request pywsgi could not parse (``ex`` says why)."""
        raise NotImplementedError

    def handle_one_request(self):
        result = super().handle_one_request()
        if isinstance(result, tuple) and result[0] == REQUEST_LINE_TOO_LONG:
            return result[0], self.request_line_refused()
        return result

    def _handle_client_error(self, ex):
        return self.client_error(ex)

    def _write_with_headers(self, data):
        """pywsgi's first write of a response, but status line, headers and a small body in one send."""
        self.headers_sent = True
        self.finalize_headers()
        head = b"".join([b"HTTP/1.1 ", self.status, b"\r\n",
                         *(name + b": " + value + b"\r\n" for name, value in self.response_headers), b"\r\n"])
        if self.response_use_chunked or not data or len(data) > self.ONE_SEND_MAX:   # ('' on a 101)
            self._sendall(head)
            self._write(data)
        else:
            self._sendall(head + data)
