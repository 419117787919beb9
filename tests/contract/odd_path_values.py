"""Odd path parameters against a live Parley server.

For every operation in /openapi.json with path parameters, each parameter
in turn gets each of a list of values that name nothing (NUL, dot segments,
percent-encoded slashes, non-UTF-8 bytes, over-long text), the others a
plain value, and the request goes out byte for byte (http.client sends the
path as given; a URL library would resolve `..` first). Every answer must be
below 500 and, if an error, carry the contract's body {detail, code,
timestamp} with code equal to the status.

    python3 odd_path_values.py BASE_URL TOKEN OPENAPI_JSON
"""

import http.client
import json
import re
import sys
from urllib.parse import urlsplit

ODD_VALUES = [
    "nul%00byte",
    "%00",
    "..",
    "%2e%2e",
    ".",
    "a%2Fb",
    "..%2F..%2Fjwt-secret",
    "%2e%2e%2fjwt-secret",
    "%ff%fe",
    "%C0%AE%C0%AE",
    "%20",
    "%E2%80%AE",
    "-1",
    "0",
    "99999999999999999999999",
    "x" * 4000,
]
PLAIN = {"integer": "1", "string": "bob"}


def request(base, method, path, token):
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    body = "{}" if method in ("POST", "PUT", "PATCH") else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    status, text = response.status, response.read()
    connection.close()
    return status, text


def main():
    base, token, document = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(document, encoding="utf-8") as f:
        paths = json.load(f)["paths"]
    failures, sent = [], 0
    for template, operations in paths.items():
        names = re.findall(r"{([^}]+)}", template)
        if not names:
            continue
        for method, operation in operations.items():
            if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                continue
            kinds = {
                p["name"]: p.get("schema", {}).get("type", "string")
                for p in operation.get("parameters", [])
                if p.get("in") == "path"
            }
            for odd_name in names:
                for value in ODD_VALUES:
                    path = template
                    for name in names:
                        filler = value if name == odd_name else PLAIN.get(kinds.get(name), "1")
                        path = path.replace("{" + name + "}", filler)
                    status, text = request(base, method.upper(), path, token)
                    sent += 1
                    what = f"{method.upper()} {path[:90]}"
                    if status >= 500:
                        failures.append(f"{what}: {status} {text[:200]!r}")
                    elif status >= 400:
                        try:
                            error = json.loads(text)
                            ok = (
                                error.get("code") == status
                                and isinstance(error.get("detail"), str)
                                and isinstance(error.get("timestamp"), str)
                            )
                        except ValueError:
                            ok = False
                        if not ok:
                            failures.append(f"{what}: {status} without the error body: {text[:200]!r}")
    print(f"{sent} requests with odd path parameters, {len(failures)} wrong")
    for failure in failures[:50]:
        print("  " + failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
