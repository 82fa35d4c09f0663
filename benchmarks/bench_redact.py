"""What scrubbing credentials from output costs (`vidcache.redact`, docs/security.md).

Remembers N presigned-style URLs (random 64-hex signatures, a shared access-key id, JWT-like tokens
that share their header, as one issuer's do), then times `redact_text` on a 200-character log line
(median of `--lines` calls) and on one multi-MB JSON-like text (an extract summary listing every
video as failed, each reason quoting its signature: the worst case), checks each planted secret is
gone, then times the redacted text again (the usual case: no secret left in it).

    .venv/bin/python benchmarks/bench_redact.py                 # table on stdout
    .venv/bin/python benchmarks/bench_redact.py --urls 200000 --json
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time

from vidcache.redact import redact_text, remember_url

JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    signatures = [secrets.token_hex(32) for _ in range(args.urls)]
    started = time.perf_counter()
    for number, signature in enumerate(signatures):
        remember_url(
            f"https://bucket.s3.amazonaws.com/v{number}.mp4?X-Amz-Credential=AKIAEXAMPLE%2F20261207%2Fus-east-1"
            f"&X-Amz-Signature={signature}&token={JWT_HEADER}{secrets.token_urlsafe(24)}"
        )
    remember_s = time.perf_counter() - started

    line = f"12:00:00 INFO fetching https://bucket.s3.amazonaws.com/v7.mp4?X-Amz-Signature={signatures[7]} (try 2)"
    line = line.ljust(200, ".")
    timings = []
    for _ in range(args.lines):
        started = time.perf_counter()
        shown = redact_text(line)
        timings.append(time.perf_counter() - started)
    assert signatures[7] not in shown

    rows = [
        f'"https://bucket/v{n}.mp4": "cannot fetch the URL (signature {signatures[n]} expired)"'
        for n in range(0, args.urls, 1)
    ]
    big = "{" + ", ".join(rows) + "}"
    started = time.perf_counter()
    shown = redact_text(big)
    big_s = time.perf_counter() - started
    assert all(signature not in shown for signature in signatures[:1000])
    started = time.perf_counter()  # the usual case: reasons were redacted when they were stored
    redact_text(shown)
    clean_s = time.perf_counter() - started

    result = {
        "urls": args.urls,
        "remember_s": round(remember_s, 2),
        "line_us": round(statistics.median(timings) * 1e6, 1),
        "big_mb": round(len(big) / 1e6, 1),
        "big_s": round(big_s, 2),
        "big_s_per_mb": round(big_s / (len(big) / 1e6), 3),
        "clean_s_per_mb": round(clean_s / (len(shown) / 1e6), 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}  {value}")


if __name__ == "__main__":
    main()
