#!/usr/bin/env python3
"""python-scrape: fetch https://www.google.com/ and save the HTML to /tmp/workspace/google.html.

Standard library only; knows nothing about idagent. It trusts the system CA bundle (or
SSL_CERT_FILE), like any Python program.
"""
import sys
import urllib.request

URL = "https://www.google.com/"
OUT = "/tmp/workspace/google.html"


def main() -> int:
    request = urllib.request.Request(URL, headers={"User-Agent": "python-scrape/1.0"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
            body = response.read()
    except Exception as e:  # noqa: BLE001 - report any failure in one line
        print(f"python-scrape: GET {URL} failed: {e}", file=sys.stderr)
        return 1
    with open(OUT, "wb") as f:
        f.write(body)
    print(f"python-scrape: GET {URL} -> {status}, wrote {len(body)} bytes to {OUT}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
