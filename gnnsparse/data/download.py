"""Download the paper's full datasets (``gnnsparse download NAME``).

The offline data root (``../shared/data``) holds stand-ins; this module fetches the originals when
a network is available.  Files go to a download cache of their own (the data root may be
read-only): ``--cache-dir``, else ``$GNNSPARSE_DOWNLOAD_DIR``, else
``~/.cache/gnnsparse/downloads``.

A download streams into ``<cache>/<file>.part``; an interrupted one is resumed with an HTTP
``Range: bytes=N-`` request (206 Partial Content appends; a server that answers 200 restarts from
byte 0; 416 means the part is already whole, or is discarded when it is longer than the file).
Dropped connections are retried (resuming each time).  Only after the size and sha256 check
(where known) is the ``.part`` renamed atomically to the final name, so a file under the final
name is always complete.

Credit: SNAP (Leskovec & Krevl, "SNAP Datasets", 2014), Network Repository (Rossi & Ahmed,
AAAI 2015), STAR (Xu et al., IJCAI 2019).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from .errors import DataError
from .originals import ORIGINALS

__all__ = [
    "DownloadError",
    "Source",
    "SOURCES",
    "DOWNLOAD_ENV_VAR",
    "default_cache_dir",
    "fetch",
    "download_dataset",
    "DownloadResult",
    "sha256_file",
]

#: Environment variable naming the download cache directory.
DOWNLOAD_ENV_VAR = "GNNSPARSE_DOWNLOAD_DIR"

_CHUNK = 1 << 16  # bytes per read
_USER_AGENT = "gnnsparse-download/1 (+python urllib)"


class DownloadError(DataError):
    """A download failed (network, HTTP status, size or checksum); the message is one line and
    names the URL or file."""


@dataclass(frozen=True)
class Source:
    """One known download source.

    ``url`` is ``None`` when no stable public URL is known (pass one explicitly).  ``size`` is in
    bytes and ``sha256`` is lowercase hex; either is ``None`` when not known (the download is then
    reported as unverified).  ``subdir`` is where the file belongs under a data root.
    """

    name: str
    url: Optional[str]
    filename: str
    subdir: str
    description: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    note: str = ""


#: Public URLs of the paper's originals (None: no stable public URL is known).
_URLS: Dict[str, Optional[str]] = {
    "ia-email": "https://nrvis.com/download/data/dynamic/ia-enron-email-dynamic.zip",
    "wiki-talk": "https://snap.stanford.edu/data/wiki-talk-temporal.txt.gz",
    "stackoverflow": "https://snap.stanford.edu/data/sx-stackoverflow.txt.gz",
    "brain": None,
}

#: The paper's four datasets: file names, folders and descriptions from
#: :data:`gnnsparse.data.originals.ORIGINALS` (where the loaders look), URLs from above. No size
#: or checksum is known offline, so all are ``None``.
SOURCES: Dict[str, Source] = {
    name: Source(name, _URLS[name], o.file, o.folder, o.source,
                 note="" if _URLS[name] else "no stable public URL is known for STAR's Brain.npz; pass --url URL "
                                             "(e.g. a copy from the STAR authors)")
    for name, o in ORIGINALS.items()
}


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of :func:`download_dataset`.

    ``path`` is the file in the download cache; ``size`` is in bytes; ``sha256`` is the computed
    hex digest; ``verified`` is True when it was checked against a known checksum; ``linked`` is
    the copy/link under ``--root`` (or ``None``); ``cached`` is True when the file was already
    complete in the cache and nothing was fetched.
    """

    name: str
    url: str
    path: Path
    size: int
    sha256: str
    verified: bool
    linked: Optional[Path] = None
    cached: bool = False


def default_cache_dir() -> Path:
    """The download cache: ``$GNNSPARSE_DOWNLOAD_DIR`` if set, else ``~/.cache/gnnsparse/downloads``.

    Returns the path (not created here).
    """
    env = os.environ.get(DOWNLOAD_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/gnnsparse/downloads").expanduser()


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Lowercase hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _content_range(value: Optional[str]):
    """Parse ``bytes a-b/total`` or ``bytes */total``; returns (start or None, total or None)."""
    if not value:
        return None, None
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value)
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _make_bar(progress: bool, total: Optional[int], initial: int, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr, leave=False)


def _is_hopeless(err: urllib.error.URLError) -> bool:
    """No host name resolution, or nothing listening: retrying would not help (offline)."""
    return isinstance(getattr(err, "reason", None), (socket.gaierror, ConnectionRefusedError))


def fetch(
    url: str,
    dest: Union[str, os.PathLike],
    *,
    expected_size: Optional[int] = None,
    expected_sha256: Optional[str] = None,
    retries: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    progress: Optional[bool] = None,
    chunk_size: int = _CHUNK,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest + ".part"``, resuming and retrying.

    Args:
        url: http(s) (or any urllib-supported) URL.
        dest: final file path; its directory is created.  Nothing is written under this name until
            the file is complete and verified (atomic ``os.replace`` of the ``.part``).
        expected_size: file size in bytes, checked when given.
        expected_sha256: lowercase hex sha256, checked when given.
        retries: how many times a dropped connection / timeout / 5xx is retried (each resumes
            from the bytes already in the ``.part``).
        retry_wait: seconds before the first retry; doubled each further retry.
        timeout: socket timeout in seconds for connecting and for each read.
        progress: tqdm bar on stderr; ``None``: only when stderr is a tty.
        chunk_size: bytes per read.
        log: called with one-line notes (resume, restart, retry); ``None``: silent.

    Returns:
        ``Path(dest)``.

    Raises:
        DownloadError: unreachable host / refused connection (names the URL), HTTP error status,
            retries exhausted (the ``.part`` is kept for a later resume), size or sha256 mismatch
            (the ``.part`` is deleted; nothing is written under the final name).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create download directory {dest.parent}: {e.strerror or e}") from None
    if progress is None:
        progress = sys.stderr.isatty()
    note = log or (lambda msg: None)
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None

    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset > expected_size:
            note(f"{part} is longer than the expected {expected_size} bytes; restarting")
            part.unlink()
            offset = 0
        if expected_size is not None and offset == expected_size and offset > 0:
            break  # already whole; verify below
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            note(f"resuming {dest.name} at byte {offset}")
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                length = resp.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                mode = "ab"
                if offset and status == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != offset:
                        # a range we did not ask for: cannot append safely; start over
                        note(f"server answered range starting at {start}, not {offset}; restarting")
                        resp.close()
                        part.unlink()
                        continue
                elif status == 200 or status == 206:
                    if offset:
                        note("server ignored the Range request (200); restarting from byte 0")
                    offset, mode = 0, "wb"
                    total = length
                else:
                    raise DownloadError(f"unexpected HTTP status {status} for {url}")
                if status == 206 and total is None and length is not None:
                    total = offset + length
                bar = _make_bar(progress, total, offset, dest.name)
                received = 0
                try:
                    with open(part, mode) as f:
                        while True:
                            block = resp.read(chunk_size)
                            if not block:
                                break
                            f.write(block)
                            received += len(block)
                            if bar is not None:
                                bar.update(len(block))
                        f.flush()
                        os.fsync(f.fileno())
                finally:
                    if bar is not None:
                        bar.close()
                if length is not None and received < length:
                    raise http.client.IncompleteRead(b"", length - received)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                _, total = _content_range(e.headers.get("Content-Range") if e.headers else None)
                if total is not None and total == offset:
                    note(f"{part} is already complete ({offset} bytes)")
                    break
                if total is None and expected_size is None:
                    # cannot tell whether the part is whole: accept it and let the checks decide
                    note(f"server refused the range at byte {offset} (416); treating {part} as complete")
                    break
                note(f"{part} ({offset} bytes) does not fit the file ({total} bytes); restarting")
                part.unlink()
                failures += 1
                if failures > retries:
                    raise DownloadError(f"HTTP 416 (range not satisfiable) for {url}, repeatedly") from None
                continue
            if e.code >= 500 and failures < retries:
                failures += 1
                note(f"HTTP {e.code} from {url}; retry {failures}/{retries}")
                time.sleep(retry_wait * 2 ** (failures - 1))
                continue
            raise DownloadError(f"HTTP {e.code} {e.reason} for {url}") from None
        except urllib.error.URLError as e:
            reason = getattr(e, "reason", e)
            if _is_hopeless(e) or failures >= retries:
                have = part.stat().st_size if part.exists() else 0
                kept = f"; {have} bytes kept in {part}, run again to resume" if have else ""
                raise DownloadError(f"cannot reach {url} ({reason}); are you offline?{kept}") from None
            failures += 1
            note(f"cannot reach {url} ({reason}); retry {failures}/{retries}")
            time.sleep(retry_wait * 2 ** (failures - 1))
        except (http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout) as e:
            have = part.stat().st_size if part.exists() else 0
            if failures >= retries:
                raise DownloadError(
                    f"download of {url} interrupted ({type(e).__name__}) after {failures + 1} attempts; "
                    f"{have} bytes kept in {part}, run again to resume") from None
            failures += 1
            note(f"connection dropped at byte {have} ({type(e).__name__}); retry {failures}/{retries}")
            time.sleep(retry_wait * 2 ** (failures - 1))

    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"size mismatch for {url}: got {size} bytes, expected {expected_size}; "
                            f"deleted {part}, run again to re-download")
    if expected_sha256 is not None:
        got = sha256_file(part)
        if got != expected_sha256:
            part.unlink()
            raise DownloadError(f"sha256 mismatch for {url}: got {got}, expected {expected_sha256}; "
                                f"deleted {part}, run again to re-download")
    os.replace(part, dest)
    return dest


def _place_in_root(path: Path, root: Union[str, os.PathLike], subdir: str) -> Path:
    """Hard-link (or copy) ``path`` into ``root/subdir/``; atomic; returns the new path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DownloadError(f"--root {root} is not an existing directory; the download stays in {path}")
    target_dir = root / subdir
    try:
        target_dir.mkdir(exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot write into --root {root} ({e.strerror or e}); "
                            f"the download stays in {path}") from None
    if not os.access(target_dir, os.W_OK):
        raise DownloadError(f"--root {target_dir} is not writable; the download stays in {path}")
    target = target_dir / path.name
    if target.exists() and os.path.samefile(target, path):
        return target
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=target_dir)
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise DownloadError(f"cannot place {path.name} into {target_dir} ({e.strerror or e}); "
                            f"the download stays in {path}") from None
    return target


def download_dataset(
    name: str,
    *,
    cache_dir: Union[str, os.PathLike, None] = None,
    root: Union[str, os.PathLike, None] = None,
    url: Optional[str] = None,
    expected_size: Optional[int] = None,
    expected_sha256: Optional[str] = None,
    progress: Optional[bool] = None,
    retries: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    log: Optional[Callable[[str], None]] = None,
) -> DownloadResult:
    """Download one of the paper's datasets (see :data:`SOURCES`) into the download cache.

    Args:
        name: ``ia-email``, ``wiki-talk``, ``stackoverflow`` or ``brain`` (case-insensitive).
        cache_dir: download directory; ``None``: :func:`default_cache_dir`.
        root: when given, the finished file is also hard-linked (or copied) to
            ``root/<subdir>/<file>`` (``snap``, ``networkrepository`` or ``star``).
        url: overrides the known URL (required for ``brain``); it must serve the original's file
            (same format).  The file is saved under the original's name (e.g. ``Brain.npz``),
            which the loaders look for.
        expected_size: bytes; overrides the table (which knows none).
        expected_sha256: hex digest; overrides the table (which knows none).
        progress, retries, retry_wait, timeout, log: passed to :func:`fetch` (seconds for the
            waits and timeout).

    Returns:
        A :class:`DownloadResult`; ``verified`` is False when no checksum was known.

    Raises:
        DownloadError: unknown name, no URL for ``brain``, any :func:`fetch` failure, or a
            ``root`` that does not exist or is not writable (the cached file is kept).
    """
    key = name.strip().lower()
    if key not in SOURCES:
        raise DownloadError(f"unknown dataset {name!r} for download; known: {', '.join(SOURCES)}")
    src = SOURCES[key]
    if url is None:
        if src.url is None:
            raise DownloadError(f"{key}: {src.note}")
        url = src.url
    # saved (and linked) under the original's own file name, whatever the URL is called: that is
    # the name the loaders look for under a data root
    filename = src.filename
    size = expected_size if expected_size is not None else (src.size if url == src.url else None)
    sha = expected_sha256 if expected_sha256 is not None else (src.sha256 if url == src.url else None)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = cache / filename
    cached = False
    if dest.is_file():
        got = sha256_file(dest)
        ok = (sha is None or got == sha.lower()) and (size is None or dest.stat().st_size == size)
        if ok:
            cached = True
            if log:
                log(f"{dest} is already downloaded")
        else:
            if log:
                log(f"{dest} does not match the expected size/sha256; downloading again")
    if not cached:
        fetch(url, dest, expected_size=size, expected_sha256=sha, retries=retries, retry_wait=retry_wait,
              timeout=timeout, progress=progress, log=log)
        got = sha256_file(dest)
    linked = _place_in_root(dest, root, src.subdir) if root is not None else None
    return DownloadResult(name=key, url=url, path=dest, size=dest.stat().st_size, sha256=got,
                          verified=sha is not None, linked=linked, cached=cached)
