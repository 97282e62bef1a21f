"""The shared table of malformed and adversarial requests (issue 5).

Each case is raw bytes and what forkserver must answer: an HTTP status, or
CLOSE (the connection ends without a response).  ``eof`` means the client
shuts down its side after sending (a truncated message); otherwise the
connection stays open, so a server that waits for more bytes instead of
answering would be caught by its header or read timeout.

A handful of cases are accepted requests that must be read *correctly*
(absolute-form overriding Host, allowed trailers kept, names with "_"
dropped): they expect 200 and list bytes that must, or must not, appear in
the echo of ``tests/apps_strict.py:echo_request``.

Used by tests/parts/test_parser.py, scripts/compare_servers.py and
scripts/fuzz_parser.py (as seeds); docs/security.md quotes the results.
"""
from collections import namedtuple

CLOSE = "close"

Case = namedtuple("Case", "name raw expect rule rfc eof present absent")
Case.__new__.__defaults__ = (False, (), ())

HOST = b"Host: example.com\r\n"
# Appended after every error case by the tests: if the server ever answers it,
# a request was smuggled behind a bad one.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"

# Byte sizes of the oversized cases (the defaults of forkparts.http11's limits).
OVER_REQUEST_LINE_BYTES = 9 * 1024
OVER_FIELD_BYTES = 9 * 1024
OVER_HEAD_FIELDS = 70          # x 1000 bytes each: 70 KB > 64 KiB, every field < 8 KiB
OVER_HEAD_FIELD_BYTES = 1000
OVER_FIELD_COUNT = 101
OVER_CHUNK_EXT_BYTES = 5 * 1024
OVER_BODY_BYTES = 1024 * 1024 * 1024 + 1


def req(line=b"GET / HTTP/1.1", headers=(HOST,), body=b""):
    """A request from its parts; headers are complete lines (with CRLF)."""
    return line + b"\r\n" + b"".join(headers) + b"\r\n" + body


def post(headers, body=b""):
    return req(b"POST / HTTP/1.1", (HOST,) + tuple(headers), body)


def cl(value, body=b"hello"):
    return post((b"Content-Length: " + value + b"\r\n",), body)


def chunked(body, extra=()):
    return post((b"Transfer-Encoding: chunked\r\n",) + tuple(extra), body)


def te(value, body=b"5\r\nhello\r\n0\r\n\r\n"):
    return post((b"Transfer-Encoding: " + value + b"\r\n",), body)


def field(line):
    return req(headers=(HOST, line))


def line(request_line):
    return req(request_line)


def trailer(*lines):
    """A chunked POST whose trailer section holds the given field lines."""
    return chunked(b"5\r\nhello\r\n0\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n")


# RFC 9110 6.5.1 (RFC 7230 4.1.2 named them): a trailer must not carry what
# frames, routes, authenticates, modifies or describes the request.
FORBIDDEN_TRAILER_LINES = (
    ("content_length", b"Content-Length: 99"), ("transfer_encoding", b"Transfer-Encoding: chunked"),
    ("host", b"Host: evil.example"), ("authorization", b"Authorization: Basic YWRtaW46"),
    ("content_type", b"Content-Type: text/evil"), ("trailer", b"Trailer: X-Sum"),
    ("te", b"TE: trailers"), ("cookie", b"Cookie: session=evil"), ("expect", b"Expect: 100-continue"),
    ("if_none_match", b'If-None-Match: "x"'), ("cache_control", b"Cache-Control: no-cache"),
    ("pragma", b"Pragma: no-cache"), ("content_encoding", b"Content-Encoding: gzip"),
)


CASES = [
    # --- Content-Length: RFC 9110 8.6, Content-Length = 1*DIGIT ----------------
    Case("cl_plus_sign", cl(b"+5"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_minus_sign", cl(b"-5"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_underscore", cl(b"0_5"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_inner_space", cl(b"0 5"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_hex", cl(b"0x5"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_decimal_point", cl(b"5.0"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_empty", cl(b""), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_superscript_digit", cl(b"\xb2"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_overflow", cl(b"99999999999999999999999"), 400, "Content-Length is 1*DIGIT", "9110 8.6"),
    Case("cl_list_form", cl(b"5, 5"), 400, "repeated or list Content-Length", "9110 8.6"),
    Case("cl_repeated_same", post((b"Content-Length: 5\r\n", b"Content-Length: 5\r\n"), b"hello"),
         400, "repeated or list Content-Length", "9110 8.6"),
    Case("cl_repeated_different", post((b"Content-Length: 5\r\n", b"Content-Length: 6\r\n"), b"hello!"),
         400, "repeated or list Content-Length", "9110 8.6"),
    Case("cl_over_max_body", cl(b"%d" % OVER_BODY_BYTES), 413, "body limit --max-body", "9110 15.5.14"),
    Case("cl_body_truncated", cl(b"10"), 400, "truncated body is an error", "9112 8", eof=True),
    Case("cl_body_stalled", cl(b"10"), 408, "--read-timeout", "9110 15.5.9"),
    # --- Content-Length with Transfer-Encoding: RFC 9112 6.1 / 6.3 -----------
    Case("cl_and_te", post((b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"),
                           b"0\r\n\r\n"), 400, "CL with TE rejected", "9112 6.1"),
    Case("te_and_cl", post((b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n"),
                           b"0\r\n\r\n"), 400, "CL with TE rejected", "9112 6.1"),
    Case("cl_and_te_identity", post((b"Content-Length: 5\r\n", b"Transfer-Encoding: identity\r\n"),
                                    b"hello"), 400, "CL with TE rejected", "9112 6.1"),
    Case("cl_and_te_smuggle", post((b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n"),
                                   b"0\r\n\r\n" + SMUGGLED), 400, "CL with TE rejected", "9112 6.1"),
    # --- Transfer-Encoding: RFC 9112 6.1, 6.3, 7 -----------------------------
    Case("te_chunked_not_last", te(b"chunked, gzip"), 400, "TE must end in chunked", "9112 6.3"),
    Case("te_identity", te(b"identity"), 400, "TE must end in chunked", "9112 6.3"),
    Case("te_empty", te(b""), 400, "TE must end in chunked", "9112 6.3"),
    Case("te_xchunked", te(b"xchunked"), 400, "TE must end in chunked", "9112 6.3"),
    Case("te_chunked_param", te(b"chunked;q=1"), 400, "TE must end in chunked", "9112 6.3"),
    Case("te_vertical_tab", te(b"\x0bchunked"), 400, "control characters in values", "9110 5.5"),
    Case("te_nbsp_chunked", te(b"\xa0chunked"), 400, "TE must end in chunked", "9112 6.3"),
    Case("te_chunked_twice", te(b"chunked, chunked"), 400, "chunked applied once", "9112 7"),
    Case("te_repeated_header", post((b"Transfer-Encoding: chunked\r\n",
                                     b"Transfer-Encoding: chunked\r\n"), b"0\r\n\r\n"),
         400, "chunked applied once", "9112 7"),
    Case("te_gzip_chunked", te(b"gzip, chunked"), 501, "unknown coding 501", "9112 6.1"),
    Case("te_unknown_coding", te(b"foo, chunked"), 501, "unknown coding 501", "9112 6.1"),
    Case("te_space_before_colon", post((b"Transfer-Encoding : chunked\r\n",), b"0\r\n\r\n"),
         400, "no space before colon", "9112 5.1"),
    Case("te_obs_fold", post((b"Transfer-Encoding:\r\n chunked\r\n",), b"0\r\n\r\n"),
         400, "obs-fold rejected", "9112 5.2"),
    Case("te_on_http10", req(b"POST / HTTP/1.0", (b"Transfer-Encoding: chunked\r\n",),
                             b"5\r\nhello\r\n0\r\n\r\n"), 400, "chunked on HTTP/1.0", "9112 6.1"),
    # --- chunk sizes and chunk framing: RFC 9112 7.1 --------------------------
    Case("chunk_size_0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_minus", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_underscore", chunked(b"0_5\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_leading_space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_trailing_space", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_inner_space", chunked(b"1 0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"), 400,
         "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_not_hex", chunked(b"g\r\nhello\r\n0\r\n\r\n"), 400, "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_overflow", chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"), 400,
         "chunk-size is 1*HEXDIG", "9112 7.1"),
    Case("chunk_size_over_max_body", chunked(b"40000001\r\nhello\r\n0\r\n\r\n"), 413,
         "body limit --max-body", "9110 15.5.14"),
    Case("chunk_missing_crlf", chunked(b"5\r\nhelloX0\r\n\r\n"), 400, "chunk ends in CRLF", "9112 7.1"),
    Case("chunk_data_too_long", chunked(b"5\r\nhello world\r\n0\r\n\r\n"), 400, "chunk ends in CRLF", "9112 7.1"),
    Case("chunk_data_bare_lf_end", chunked(b"5\r\nhello\n0\r\n\r\n"), 400, "chunk ends in CRLF", "9112 7.1"),
    Case("chunk_size_bare_lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400, "CRLF only", "9112 2.2"),
    Case("chunk_last_bare_lf", chunked(b"5\r\nhello\r\n0\n\n"), 400, "CRLF only", "9112 2.2", eof=True),
    Case("chunk_ext_bare_cr", chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), 400, "CRLF only", "9112 2.2"),
    Case("chunk_ext_no_name", chunked(b"5;=x\r\nhello\r\n0\r\n\r\n"), 400, "chunk-ext grammar", "9112 7.1.1"),
    Case("chunk_ext_open_quote", chunked(b'5;a="x\r\nhello\r\n0\r\n\r\n'), 400, "chunk-ext grammar", "9112 7.1.1"),
    Case("chunk_ext_too_long", chunked(b"5;a=" + b"x" * OVER_CHUNK_EXT_BYTES + b"\r\nhello\r\n0\r\n\r\n"),
         400, "chunk-extension bound", "9112 7.1.1"),
    Case("chunk_data_truncated", chunked(b"5\r\nhel"), 400, "truncated body is an error", "9112 7.1", eof=True),
    Case("chunk_no_last_chunk", chunked(b"5\r\nhello\r\n"), 400, "truncated body is an error", "9112 7.1", eof=True),
    Case("chunk_no_final_crlf", chunked(b"5\r\nhello\r\n0\r\n"), 400, "truncated body is an error",
         "9112 7.1", eof=True),
    Case("chunk_stalled", chunked(b"5\r\nhel"), 408, "--read-timeout", "9110 15.5.9"),
    Case("trailer_obs_fold", chunked(b"0\r\nX-T: a\r\n b\r\n\r\n"), 400, "obs-fold rejected", "9112 5.2"),
    Case("trailer_bad_name", chunked(b"0\r\nX T: a\r\n\r\n"), 400, "field names are tokens", "9110 5.1"),
    Case("trailer_allowed_kept", trailer(b"X-Ok: fine", b"X-Sum:  12 "), 200,
         "other trailers reach the app", "9110 6.5.2",
         present=(b"body=5", b"trailer:x-ok=fine", b"trailer:x-sum=12")),
    Case("trailer_forbidden_after_allowed", trailer(b"X-Ok: fine", b"Host: evil.example"), 400,
         "forbidden trailer fields 400", "9110 6.5.1"),
] + [
    Case("trailer_" + name, trailer(field_line), 400, "forbidden trailer fields 400", "9110 6.5.1")
    for name, field_line in FORBIDDEN_TRAILER_LINES
] + [
    # --- lines: CRLF only, RFC 9112 2.2 ----------------------------------------
    Case("bare_lf_request_line", b"GET / HTTP/1.1\nHost: example.com\r\n\r\n", 400, "CRLF only", "9112 2.2"),
    Case("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: example.com\n\n", 400, "CRLF only", "9112 2.2"),
    Case("bare_lf_head_end", b"GET / HTTP/1.1\r\nHost: example.com\r\n\n", 400, "CRLF only", "9112 2.2"),
    Case("bare_cr_in_value", field(b"X-A: a\rb\r\n"), 400, "CRLF only", "9112 2.2"),
    Case("bare_cr_line_end", req(headers=(b"Host: example.com\r\r\n",)), 400, "CRLF only", "9112 2.2"),
    Case("bare_cr_request_line", b"GET / HTTP/1.1\rHost: example.com\r\n\r\n", 400, "CRLF only", "9112 2.2"),
    Case("leading_bare_lf", b"\n" + req(), 400, "CRLF only", "9112 2.2"),
    # --- field lines: RFC 9112 5, RFC 9110 5 -----------------------------------
    Case("obs_fold_space", field(b"X-A: a\r\n b\r\n"), 400, "obs-fold rejected", "9112 5.2"),
    Case("obs_fold_tab", field(b"X-A: a\r\n\tb\r\n"), 400, "obs-fold rejected", "9112 5.2"),
    Case("first_field_folded", b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n", 400,
         "obs-fold rejected", "9112 5.2"),
    Case("space_before_colon", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400,
         "no space before colon", "9112 5.1"),
    Case("tab_before_colon", field(b"X-A\t: 1\r\n"), 400, "no space before colon", "9112 5.1"),
    Case("name_not_token", field(b"X(A): 1\r\n"), 400, "field names are tokens", "9110 5.1"),
    Case("name_empty", field(b": 1\r\n"), 400, "field names are tokens", "9110 5.1"),
    Case("name_non_ascii", field(b"X-\xe9: 1\r\n"), 400, "field names are tokens", "9110 5.1"),
    Case("line_without_colon", field(b"X-A 1\r\n"), 400, "field names are tokens", "9110 5.1"),
    Case("value_nul", field(b"X-A: a\x00b\r\n"), 400, "control characters in values", "9110 5.5"),
    Case("value_ctl", field(b"X-A: a\x01b\r\n"), 400, "control characters in values", "9110 5.5"),
    Case("value_del", field(b"X-A: a\x7fb\r\n"), 400, "control characters in values", "9110 5.5"),
    Case("value_escape", field(b"X-A: \x1b[31m\r\n"), 400, "control characters in values", "9110 5.5"),
    Case("value_form_feed_around", field(b"X-A:\x0cv\x0c\r\n"), 400, "only SP/HTAB trimmed", "9110 5.5"),
    Case("underscore_name_dropped", field(b"X_Forwarded_For: 6.6.6.6\r\n"), 200,
         "names with _ dropped", "9110 5.1", present=(b"path=/",), absent=(b"6.6.6.6",)),
    # --- request line: RFC 9112 3 ----------------------------------------------
    Case("rl_double_space", line(b"GET  / HTTP/1.1"), 400, "method SP target SP version", "9112 3"),
    Case("rl_tab_separator", line(b"GET\t/\tHTTP/1.1"), 400, "method SP target SP version", "9112 3"),
    Case("rl_trailing_space", line(b"GET / HTTP/1.1 "), 400, "method SP target SP version", "9112 3"),
    Case("rl_leading_space", line(b" GET / HTTP/1.1"), 400, "method SP target SP version", "9112 3"),
    Case("rl_no_version", line(b"GET /"), 400, "method SP target SP version", "9112 3"),
    Case("rl_method_not_token", line(b"G(T / HTTP/1.1"), 400, "method is a token", "9112 3.1"),
    Case("rl_nul_in_target", line(b"GET /a\x00b HTTP/1.1"), 400, "method SP target SP version", "9112 3"),
    Case("rl_non_ascii_target", line(b"GET /caf\xc3\xa9 HTTP/1.1"), 400, "method SP target SP version", "9112 3"),
    Case("rl_fragment", line(b"GET /a#b HTTP/1.1"), 400, "target forms", "9112 3.2"),
    Case("rl_too_long", line(b"GET /" + b"a" * OVER_REQUEST_LINE_BYTES + b" HTTP/1.1"), 414,
         "request line 8 KiB (414)", "9112 3"),
    # --- versions: RFC 9112 2.3 --------------------------------------------------
    Case("version_2_0", line(b"GET / HTTP/2.0"), 505, "major version 1 only (505)", "9110 15.6.6"),
    Case("version_3_0", line(b"GET / HTTP/3.0"), 505, "major version 1 only (505)", "9110 15.6.6"),
    Case("version_0_9", line(b"GET / HTTP/0.9"), 505, "major version 1 only (505)", "9110 15.6.6"),
    Case("version_1_10", line(b"GET / HTTP/1.10"), 400, "HTTP/DIGIT.DIGIT", "9112 2.3"),
    Case("version_11_1", line(b"GET / HTTP/11.1"), 400, "HTTP/DIGIT.DIGIT", "9112 2.3"),
    Case("version_lowercase", line(b"GET / http/1.1"), 400, "HTTP/DIGIT.DIGIT", "9112 2.3"),
    Case("version_no_minor", line(b"GET / HTTP/1"), 400, "HTTP/DIGIT.DIGIT", "9112 2.3"),
    Case("version_letter", line(b"GET / HTTP/1.a"), 400, "HTTP/DIGIT.DIGIT", "9112 2.3"),
    Case("version_three_parts", line(b"GET / HTTP/1.1.1"), 400, "HTTP/DIGIT.DIGIT", "9112 2.3"),
    # --- target forms: RFC 9112 3.2 ------------------------------------------------
    Case("asterisk_with_get", line(b"GET * HTTP/1.1"), 400, "target forms", "9112 3.2.4"),
    Case("authority_with_get", line(b"GET example.com:80 HTTP/1.1"), 400, "target forms", "9112 3.2.3"),
    Case("connect_authority", line(b"CONNECT example.com:443 HTTP/1.1"), 501, "target forms", "9112 3.2.3"),
    Case("connect_origin_form", line(b"CONNECT / HTTP/1.1"), 400, "target forms", "9112 3.2.3"),
    Case("connect_no_port", line(b"CONNECT example.com HTTP/1.1"), 400, "target forms", "9112 3.2.3"),
    Case("relative_target", line(b"GET a/b HTTP/1.1"), 400, "target forms", "9112 3.2"),
    Case("absolute_userinfo", line(b"GET http://user@example.com/ HTTP/1.1"), 400, "target forms", "9112 3.2.2"),
    Case("absolute_bad_scheme", line(b"GET ftp://example.com/ HTTP/1.1"), 400, "target forms", "9112 3.2.2"),
    Case("absolute_no_authority", line(b"GET http:///x HTTP/1.1"), 400, "target forms", "9112 3.2.2"),
    Case("absolute_overrides_host", req(b"GET http://good.example/p?q=1 HTTP/1.1",
                                        (b"Host: evil.example\r\n",)),
         200, "absolute-form authority overrides Host", "9112 3.2.2",
         present=(b"host=good.example", b"path=/p"), absent=(b"evil",)),
    # --- Host: RFC 9112 3.2 ------------------------------------------------------
    Case("host_missing", req(headers=()), 400, "Host missing or repeated on 1.1", "9112 3.2"),
    Case("host_repeated", req(headers=(HOST, b"Host: other.example\r\n")), 400,
         "Host missing or repeated on 1.1", "9112 3.2"),
    Case("host_repeated_same", req(headers=(HOST, HOST)), 400, "Host missing or repeated on 1.1", "9112 3.2"),
    # --- singleton fields repeated: RFC 9110 5.3 --------------------------------
    Case("content_type_repeated", field(b"Content-Type: text/plain\r\nContent-Type: text/html\r\n"),
         400, "singleton field repeated", "9110 5.3"),
    Case("content_type_repeated_same", field(b"Content-Type: text/plain\r\nContent-Type: text/plain\r\n"),
         400, "singleton field repeated", "9110 5.3"),
    Case("content_type_repeated_with_body",
         post((b"Content-Type: text/plain\r\n", b"Content-Length: 5\r\n",
               b"content-type: application/json\r\n"), b"hello"),
         400, "singleton field repeated", "9110 5.3"),
    Case("authorization_repeated", field(b"Authorization: Basic YWxpY2U6\r\nAuthorization: Basic Ym9iOg==\r\n"),
         400, "singleton field repeated", "9110 5.3"),
    Case("authorization_repeated_same", field(b"Authorization: Bearer t\r\nauthorization: Bearer t\r\n"),
         400, "singleton field repeated", "9110 5.3"),
    Case("host_with_space", req(headers=(b"Host: a b\r\n",)), 400, "Host is uri-host[:port]", "9112 3.2"),
    Case("host_with_slash", req(headers=(b"Host: a/b\r\n",)), 400, "Host is uri-host[:port]", "9112 3.2"),
    Case("host_with_userinfo", req(headers=(b"Host: u@a\r\n",)), 400, "Host is uri-host[:port]", "9112 3.2"),
    Case("host_bad_port", req(headers=(b"Host: a:b\r\n",)), 400, "Host is uri-host[:port]", "9112 3.2"),
    # --- leading empty lines: RFC 9112 2.2 ------------------------------------
    Case("two_leading_empty_lines", b"\r\n\r\n" + req(), 400, "one leading empty line", "9112 2.2"),
    Case("only_empty_lines", b"\r\n\r\n", 400, "one leading empty line", "9112 2.2"),
    Case("one_leading_empty_line", b"\r\n" + req(), 200, "one leading empty line", "9112 2.2",
         present=(b"path=/",)),
    # --- Expect: RFC 9110 10.1.1 ----------------------------------------------
    Case("expect_unknown", post((b"Expect: foo\r\n", b"Content-Length: 5\r\n"), b"hello"), 417,
         "Expect other than 100-continue", "9110 10.1.1"),
    Case("expect_list", post((b"Expect: 100-continue, foo\r\n", b"Content-Length: 5\r\n"), b"hello"),
         417, "Expect other than 100-continue", "9110 10.1.1"),
    Case("expect_102", post((b"Expect: 102-processing\r\n", b"Content-Length: 5\r\n"), b"hello"),
         417, "Expect other than 100-continue", "9110 10.1.1"),
    # --- limits: RFC 6585 5 (431), RFC 9110 15.5.14 (413) ------------------------
    Case("too_many_fields", req(headers=(HOST,) + tuple(b"X-F%d: v\r\n" % i for i in range(OVER_FIELD_COUNT))),
         431, "100 header fields (431)", "6585 5"),
    Case("field_too_long", field(b"X-Big: " + b"v" * OVER_FIELD_BYTES + b"\r\n"), 431,
         "one field 8 KiB (431)", "6585 5"),
    Case("head_too_long", req(headers=(HOST,) + tuple(
        b"X-F%d: " % i + b"v" * OVER_HEAD_FIELD_BYTES + b"\r\n" for i in range(OVER_HEAD_FIELDS))),
         431, "whole head 64 KiB (431)", "6585 5"),
    # --- truncated and slow heads -------------------------------------------------
    Case("head_truncated", b"GET / HTTP/1.1\r\nHost: example.com\r\n", 400,
         "truncated head is an error", "9112 8", eof=True),
    Case("empty_connection", b"", CLOSE, "nothing sent: close quietly", "9112 9.6", eof=True),
    Case("head_stalled", b"GET / HTTP/1.1\r\nHost: exa", 408, "--header-timeout", "9110 15.5.9"),
]

BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "duplicate case names"
