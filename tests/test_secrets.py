"""No secret leaves the process (issue 25, docs/security.md): credentials in source URLs are never
stored or printed, a re-signed URL is the same video, basic auth works and a refusal is one line.
The servers are real (the standard library's, in a thread); urllib's own parser is the reference
for what a redacted URL still says."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

import click
import h5py
import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli, tiny_clip_args
from vidcache.redact import (
    REDACTED,
    SECRET_QUERY_KEYS,
    SIGNING_QUERY_KEYS,
    redact_text,
    redact_url,
    remember_url,
    url_video_id,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "security.md"
# the keys issue 25 names: the list may grow, never lose one of these
ISSUE_KEYS = (
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature", "AWSAccessKeyId",
    "X-Goog-Signature", "X-Goog-Credential", "sig", "se", "sp", "sv", "skoid", "Policy", "Key-Pair-Id",
    "token", "access_token", "api_key", "key", "auth",
)  # fmt: skip
USER, PASSWORD = "alice", "S3cr3tPassw0rd"
GOOD_SIGNATURES = {"SIGNATUREONE111", "SIGNATURETWO222"}


# the list and the functions ------------------------------------------------------------------------
def test_the_secret_keys_cover_the_issue_and_are_documented():
    assert {k.lower() for k in ISSUE_KEYS} <= SECRET_QUERY_KEYS
    documented = DOCS.read_text()
    missing = [k for k in sorted(SECRET_QUERY_KEYS | SIGNING_QUERY_KEYS) if f"`{k}`" not in documented.lower()]
    assert not missing, f"docs/security.md does not list {missing}"


@pytest.mark.parametrize("key", sorted(SECRET_QUERY_KEYS))
def test_every_secret_key_is_redacted_in_any_case_and_left_out_of_the_video_id(key):
    spelled = key.upper() if len(key) % 2 else key.title()  # keys are compared case-insensitively
    url = f"https://host.example:8443/a%20b/v.mp4?keep=1&{spelled}=Val%2Fue-12345&X-Amz-Date=20260101T000000Z&n=2"
    shown = redact_url(url)
    assert "Val" not in shown
    assert parse_qsl(urlsplit(shown).query) == [("keep", "1"), (spelled, REDACTED), ("X-Amz-Date", "20260101T000000Z"),
                                                 ("n", "2")]  # fmt: skip
    assert urlsplit(shown)[:3] == urlsplit(url)[:3]  # scheme, host and path as given
    video_id = url_video_id(url)
    assert parse_qsl(urlsplit(video_id).query) == [("keep", "1"), ("n", "2")]  # no secret, no signing date
    assert url_video_id(url.replace("Val%2Fue-12345", "another-signature")) == video_id
    # text nobody parsed: the generic backstop still catches the value
    assert "Val%2Fue-12345" not in redact_text(f"GET {url} failed: 403")


def test_user_info_is_redacted_and_remembered_secrets_are_scrubbed_from_any_text():
    url = "http://bob:p%40ss%3Aword-9@127.0.0.1:9/v.mp4?X-Amz-Signature=abcdef0123456789"
    assert redact_url(url) == f"http://{REDACTED}@127.0.0.1:9/v.mp4?X-Amz-Signature={REDACTED}"
    assert url_video_id(url) == "http://127.0.0.1:9/v.mp4"
    remember_url(url)
    # a library quoting only the decoded password, or only the signature, away from any URL
    text = redact_text("auth failed for p@ss:word-9 (signature abcdef0123456789 expired)")
    assert "p@ss:word-9" not in text and "abcdef0123456789" not in text
    assert redact_text("a plain line, nothing secret: 12 videos") == "a plain line, nothing secret: 12 videos"


def test_remembered_tokens_that_share_a_prefix_are_each_found_and_only_they():
    import secrets

    header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."  # every JWT of one issuer starts so
    tokens = [header + secrets.token_urlsafe(24) for _ in range(500)]
    for number, token in enumerate(tokens):
        remember_url(f"https://cdn.example/v{number}.mp4?access_token={token}")
    stranger = header + "not-remembered-0123456789"
    text = f"refused {tokens[0]}, then {tokens[250]}{tokens[499]} (and {stranger})"
    assert redact_text(text) == f"refused {REDACTED}, then {REDACTED} (and {stranger})"


# a server that wants credentials -----------------------------------------------------------------
class Guarded(SimpleHTTPRequestHandler):
    """/secure/...: basic auth alice:S3cr3tPassw0rd, else 401; /signed/...: a GET whose
    X-Amz-Signature is one the server issued, else 403 (as S3 answers a presigned URL, HEAD too);
    /redirect/NAME: 302 to another server; anything else is served as is."""

    seen: list[tuple[str, str | None]]
    other: str = ""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        parts = urlsplit(self.path)
        top, _, rest = parts.path.lstrip("/").partition("/")
        if top == "secure":
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_error(401, "Unauthorized")
                return None
        elif top == "signed":
            if self.command == "HEAD" or parse_qs(parts.query).get("X-Amz-Signature", [""])[0] not in GOOD_SIGNATURES:
                self.send_error(403, "Forbidden")
                return None
        elif top == "redirect":
            self.send_response(302)
            self.send_header("Location", f"{self.other}/{rest}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        else:
            rest = parts.path.lstrip("/")
        self.path = "/" + rest
        return super().send_head()


@contextlib.contextmanager
def serving(directory: Path, other: str = "") -> Iterator[tuple[str, list]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (Guarded,), {"seen": seen, "other": other})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_basic_auth_is_a_header_that_a_redirect_does_not_carry_to_the_next_server(corpus):
    from vidcache.remote import CredentialsRefused, fetch_to_temp, url_identity

    source = corpus / "a" / "clip.mp4"
    with serving(corpus / "a") as (elsewhere, seen_elsewhere), serving(corpus, f"http://{elsewhere}") as (host, seen):
        local = fetch_to_temp(f"http://{USER}:{PASSWORD}@{host}/secure/a/clip.mp4")
        assert Path(local).read_bytes() == source.read_bytes()
        Path(local).unlink()
        assert url_identity(f"http://{USER}:{PASSWORD}@{host}/secure/a/clip.mp4")[0] == source.stat().st_size
        local = fetch_to_temp(f"http://{USER}:{PASSWORD}@{host}/redirect/clip.mp4")
        assert Path(local).read_bytes() == source.read_bytes()
        Path(local).unlink()
        with pytest.raises(CredentialsRefused) as refused:
            fetch_to_temp(f"http://{USER}:WrongPassw0rd1@{host}/secure/a/clip.mp4")
    assert str(refused.value).startswith(
        f"the server refused the credentials for http://{REDACTED}@{host}/secure/a/clip.mp4 (HTTP 401 "
    )
    assert "\n" not in str(refused.value) and "WrongPassw0rd1" not in str(refused.value)
    assert seen_elsewhere == [("/clip.mp4", None)]  # the redirect's target never got the password
    assert all(auth is None or auth.startswith("Basic ") for _, auth in seen)


def test_an_unexpected_error_prints_its_traceback_without_the_credentials(capsys):
    from vidcache.cli import cli, main

    url = "https://carol:Tr4ceb4ckPass@bucket.example/v.mp4?X-Amz-Signature=TRACEBACKSIG42"

    @cli.command("boom-for-a-test")
    @click.option("--json", "as_json", is_flag=True)
    def boom(as_json: bool) -> None:
        raise RuntimeError(f"could not open {url}")

    try:
        with pytest.raises(SystemExit) as stopped:
            main(["boom-for-a-test", "--json"])
    finally:
        cli.commands.pop("boom-for-a-test")
    out, err = capsys.readouterr()
    assert stopped.value.code == 70 and "Traceback" in err and "RuntimeError" in err
    assert json.loads(out)["error"].startswith("unexpected RuntimeError: could not open https://***@bucket.example/")
    for secret in ("Tr4ceb4ckPass", "TRACEBACKSIG42", "carol"):
        assert secret not in out + err


# extract → status → report → mine → train → predict, then grep everything ------------------------
def run_here(*args: object) -> tuple[int, str]:
    """`vidcache ARGS` in this process (quicker than a subprocess): exit code, stdout + stderr."""
    from vidcache.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue()


def h5_strings(path: Path) -> str:
    """Every attribute and string dataset of an HDF5 file, decoded by h5py (a compressed chunk would
    hide a secret from a byte grep)."""
    found: list[str] = []

    def visit(name: str, node) -> None:
        found.append(name)
        found.extend(f"{key}={value!r}" for key, value in node.attrs.items())
        if isinstance(node, h5py.Dataset) and node.dtype.kind in "OSU":
            found.extend(map(repr, np.asarray(node[()]).ravel().tolist()))

    with h5py.File(path, "r") as h5:
        found.extend(f"{key}={value!r}" for key, value in h5.attrs.items())
        h5.visititems(visit)
    return "\n".join(found)


def test_no_planted_secret_reaches_any_file_or_output_and_a_resigned_url_is_skipped(
    corpus, tiny_checkpoint, tmp_path, caplog
):
    with serving(corpus / "a") as (host, _):
        signed = (
            f"http://{host}/signed/green-right-1.mp4?X-Amz-Signature=SIGNATUREONE111&X-Amz-Credential=AKIAEXAMPLEKEY01"
        )
        rows = [
            f"http://{USER}:{PASSWORD}@{host}/secure/clip.mp4,red,train",
            f"{signed}&X-Amz-Date=20261207T000000Z,green,train",
            f"http://{host}/blue-left-2.mp4?token=T0KENLEAK0001&size=small,red,val",
            f"http://{USER}:WrongPassw0rd1@{host}/secure/red-right-3.mp4,red,train",
            f"http://{host}/missing.mp4?token=T0KENLEAK0002&note=<b>x</b>,red,train",  # markup in the id
            f"http://{host}/signed/red-right-3.mp4?X-Amz-Signature=EXPIREDSIG0003,red,train",
        ]
        manifest = tmp_path / "urls.csv"
        manifest.write_text("path,labels,split\n" + "\n".join(rows) + "\n")
        cache, run, report = tmp_path / "cache", tmp_path / "run", tmp_path / "report.html"
        extract = ["extract", manifest, "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--fps", "2", "--json"]
        first = run_cli("--verbose", *extract)  # a real process: its logs and progress lines too
        summary = json.loads(first.stdout)
        assert first.returncode == 1 and (summary["extracted"], summary["failed"]) == (3, 3), first.stderr
        outputs = [first.stdout, first.stderr]

        # the same objects under freshly signed URLs: nothing is redone, nothing is duplicated
        manifest.write_text(manifest.read_text().replace("SIGNATUREONE111", "SIGNATURETWO222").replace(
            "20261207T000000Z", "20261208T000000Z"))  # fmt: skip
        code, out = run_here(*extract)
        again = json.loads(out.splitlines()[-1])
        assert code == 1 and (again["extracted"], again["skipped"], again["failed"]) == (0, 3, 3), out
        outputs.append(out)
        printed: dict[str, str] = {}
        for command in (
            ["status", "--cache", cache, "--json"],
            ["status", "--cache", cache],
            ["report", "--cache", cache, "--out", report],
            ["mine", "hard-negative-videos", "--cache", cache, "--k", "1", "--json"],
            ["train", "--cache", cache, "--out", run, "--head", "pool", "--epochs", "1", "--lr", "0.01",
             "--weight-decay", "0.0001", "--json"],
            ["predict", "--run", run, "--cache", cache, "--out", run / "predictions.parquet", "--json"],
        ):  # fmt: skip
            code, out = run_here(*command)
            assert code == 0, (command, out)
            printed[" ".join(map(str, command))] = out
            outputs.append(out)
        outputs.append(caplog.text)

    status = json.loads(printed[f"status --cache {cache} --json"].splitlines()[-1])
    failures = status["failures"]
    assert sorted(failures) == [  # the default video_id: the URL without its credentials
        f"http://{host}/missing.mp4?note=<b>x</b>",
        f"http://{host}/secure/red-right-3.mp4",
        f"http://{host}/signed/red-right-3.mp4",
    ]
    refusals = {f"http://{host}/secure/red-right-3.mp4": 401, f"http://{host}/signed/red-right-3.mp4": 403}
    for video_id, refused_code in refusals.items():
        reason = failures[video_id]
        assert "\n" not in reason and f" (HTTP {refused_code} " in reason, reason
    assert failures[f"http://{host}/secure/red-right-3.mp4"].startswith(
        f"the server refused the credentials for http://***@{host}/secure/red-right-3.mp4 (HTTP 401 "
    )
    assert failures[f"http://{host}/signed/red-right-3.mp4"].startswith(
        f"the server refused the credentials for http://{host}/signed/red-right-3.mp4?X-Amz-Signature=*** (HTTP 403 "
    )
    page = report.read_text(encoding="utf-8")
    assert "missing.mp4?note=&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # escaped, not markup
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert sorted(set(predictions["video_id"])) == [
        f"http://{host}/blue-left-2.mp4?size=small",
        f"http://{host}/secure/clip.mp4",
        f"http://{host}/signed/green-right-1.mp4",
    ]

    planted = ("S3cr3tPassw0rd", "WrongPassw0rd1", "SIGNATUREONE111", "SIGNATURETWO222", "AKIAEXAMPLEKEY01",
               "T0KENLEAK0001", "T0KENLEAK0002", "EXPIREDSIG0003", f"{USER}:")  # fmt: skip
    texts = {f"output {i}": text for i, text in enumerate(outputs)}
    files = [p for folder in (cache, run) for p in folder.rglob("*") if p.is_file()] + [report]
    assert len(files) > 10 and any(p.suffix == ".h5" for p in files) and any(p.suffix == ".jpg" for p in files)
    for path in files:
        texts[str(path)] = path.read_bytes().decode("latin-1")  # every byte, binary files included
        if path.suffix == ".h5":
            texts[f"{path} (h5py)"] = h5_strings(path)
        if path.suffix == ".parquet":
            texts[f"{path} (pandas)"] = pd.read_parquet(path).to_string()
    leaks = [(where, secret) for where, text in texts.items() for secret in planted if secret in text]
    assert not leaks, leaks


class _Payload:
    """Unpickling this creates a file: the proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_inside_imported_features_is_refused_never_run(tmp_path):
    from vidcache.cache.importer import import_features

    marker = tmp_path / "pickle-ran"
    (tmp_path / "videos").mkdir()
    manifest = tmp_path / "videos" / "manifest.csv"
    manifest.write_text("path,labels,split\none.mp4,cat,train\ntwo.mp4,dog,train\n")
    (tmp_path / "feats").mkdir()
    np.save(tmp_path / "feats" / "one.npy", np.ones((2, 4), "f4"))
    np.save(tmp_path / "feats" / "two.npy", np.array([[_Payload(marker)]], dtype=object), allow_pickle=True)
    np.load(tmp_path / "feats" / "two.npy", allow_pickle=True)  # the payload is real: loading it runs it
    assert marker.exists()
    marker.unlink()
    summary = import_features(tmp_path / "feats", manifest=manifest, cache_dir=tmp_path / "cache", view="ext",
                              command="vidcache import")  # fmt: skip
    assert (summary.imported, summary.failed) == (1, 1) and "two.npy" in summary.failures["two.mp4"]
    assert not marker.exists()
