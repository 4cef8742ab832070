"""Response headers a WSGI application may not send (RFC 9110 §5.5, §5.6.2;
§8.6 for Content-Length), for tests/integration/wsgi_grammar.rs.

start_response must refuse each of them by raising, naming the header, as
Gunicorn's does: `/caught/<case>` catches the exception and answers its
text; `/<case>` lets it go, so the server logs its traceback and answers
500. `/allowed` sends the bytes a field value may hold.
"""

BAD = {
    "control-value": ("X-Bad", "a\x01b"),
    "escape-value": ("X-Colour", "\x1b[31mred"),
    "delete-value": ("X-Del", "a\x7f"),
    "newline-value": ("X-Split", "a\r\nX-Injected: yes"),
    "space-name": ("X Bad", "v"),
    "colon-name": ("X-Bad:", "v"),
    "empty-name": ("", "v"),
    "signed-length": ("Content-Length", "+5"),
}


def _text(start_response, text, status="200 OK"):
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"].lstrip("/")

    if path == "allowed":
        # HTAB, SP and obs-text (here latin-1 'é') are field-value bytes.
        start_response("200 OK", [("X-Tab", "a\tb c"), ("X-Latin", "caf\xe9"),
                                  ("Content-Length", "2")])
        return [b"ok"]

    if path.startswith("caught/"):
        name, value = BAD[path[len("caught/"):]]
        try:
            start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
        except Exception as e:  # what an application may do with it
            return _text(start_response, "%s: %s" % (type(e).__name__, e))
        # Accepted: the server still refuses the head (a bare 500), which
        # the test reports.
        return [b"start_response accepted it"]

    name, value = BAD[path]
    start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
    return [b"not reached"]
