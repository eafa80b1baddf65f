"""Fetching checksummed files: look for them on disk, verify, download from mirrors.

A downloaded file is streamed into a temporary file *in its destination folder* while its
MD5 is computed, and only renamed into place (:func:`minidl.io.atomic_write`, atomic on one
file system) once the MD5 equals the published one. So a final file name never holds a
partial or corrupt download, and a download killed half-way leaves nothing behind but (at
worst) a hidden ``.tmp`` file that nothing reads.

Only the standard library's ``urllib`` is used for HTTP; ``tqdm`` draws the progress bar.
"""
import hashlib
import http.client
import urllib.request
import warnings
from pathlib import Path

from ..io import atomic_write, file_digest

DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a mirror counts as failed
_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """Every mirror failed for one file. ``attempts`` lists ``(url, reason)`` pairs."""

    def __init__(self, filename, attempts):
        self.filename = filename
        self.attempts = list(attempts)
        tried = "; ".join(f"{url}: {reason}" for url, reason in self.attempts) or "no mirrors given"
        super().__init__(f"could not download {filename} ({tried})")


class DataNotFoundError(FileNotFoundError):
    """Dataset files are missing (or corrupt) and could not be fetched."""


def _mirror_url(mirror, filename):
    return mirror.rstrip("/") + "/" + filename


def _progress_bar(total, desc, enabled):
    """A tqdm bar, or a do-nothing stand-in when tqdm is missing or bars are off."""
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
        except ImportError:  # tqdm is a soft dependency: no bar is better than no download
            pass

    class _NoBar:
        def update(self, n):
            pass

        def close(self):
            pass

    return _NoBar()


def _fetch_to(url, fileobj, desc, timeout, progress):
    """Stream ``url`` into the open binary ``fileobj``; return the hex MD5 of what came.

    Raises ``OSError`` / ``http.client.HTTPException`` on network errors and
    ``OSError`` when the body is shorter than the announced Content-Length.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "minidl"})
    digest = hashlib.md5()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        declared = response.headers.get("Content-Length")
        declared = int(declared) if declared and declared.isdecimal() else None
        bar = _progress_bar(declared, desc, progress)
        try:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                fileobj.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
    if declared is not None and received != declared:
        raise OSError(f"incomplete transfer: got {received} of {declared} bytes")
    return digest.hexdigest()


def download(filename, mirrors, dest_dir, md5, timeout=None, progress=True):
    """Download ``filename`` into ``dest_dir``, trying ``mirrors`` (base URLs) in turn.

    The file is accepted from the first mirror whose bytes have MD5 ``md5`` (hex); a
    mirror that is unreachable, breaks off, or serves other bytes is reported in the
    ``DownloadError`` raised when none succeeds. Returns the final path.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / filename
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    attempts = []
    for mirror in mirrors:
        url = _mirror_url(mirror, filename)
        try:
            with atomic_write(final, "wb") as f:  # renamed into place only if the body returns
                got = _fetch_to(url, f, filename, timeout, progress)
                if got != md5:
                    raise _ChecksumMismatch(f"checksum mismatch: md5 {got}, expected {md5}")
            return final
        except _ChecksumMismatch as e:
            attempts.append((url, str(e)))
        except (OSError, http.client.HTTPException, ValueError) as e:
            # URLError/HTTPError/timeouts are OSErrors; IncompleteRead is an HTTPException;
            # ValueError covers a malformed mirror URL.
            attempts.append((url, f"{type(e).__name__}: {e}"))
    raise DownloadError(filename, attempts)


class _ChecksumMismatch(Exception):
    """Raised inside the atomic write to discard a download whose MD5 is wrong."""


def ensure_files(checksums, search_dirs, dest_dir, mirrors, download_missing, dataset, progress=True,
                 hint=None):
    """Paths of verified copies of the files in ``checksums`` (``{filename: md5}``).

    Each file is looked for in ``search_dirs`` (first hit wins). A copy whose MD5 is wrong
    is reported with a warning and treated as missing. Missing files are downloaded into
    ``dest_dir`` when ``download_missing``; otherwise, or when downloads fail, one
    :class:`DataNotFoundError` names every file still needed and the folder to put it in
    (``hint``, if given, is one more line for that message).

    Returns ``{filename: Path}``.
    """
    found, needed, corrupt = {}, [], []
    for name, md5 in checksums.items():
        path = next((Path(d) / name for d in search_dirs if (Path(d) / name).is_file()), None)
        if path is None:
            needed.append(name)
            continue
        got = file_digest(path, "md5")
        if got == md5:
            found[name] = path
        else:
            warnings.warn(f"{dataset}: {path} is corrupt or incomplete (md5 {got}, expected {md5}); "
                          + ("fetching it again" if download_missing else "it will not be used"),
                          RuntimeWarning, stacklevel=3)
            corrupt.append(name)
            needed.append(name)
    failures = []
    if download_missing:
        for name in needed:
            try:
                found[name] = download(name, mirrors, dest_dir, checksums[name], progress=progress)
            except DownloadError as e:
                failures.append(e)
        still = [e.filename for e in failures]
    else:
        still = needed
    if still:
        raise DataNotFoundError(_missing_message(dataset, still, corrupt, checksums, dest_dir, failures, hint))
    return found


def _missing_message(dataset, names, corrupt, checksums, dest_dir, failures, hint):
    lines = [f"{dataset}: {len(names)} file(s) missing or corrupt, and "
             + ("they could not be downloaded." if failures else "download=False.")]
    lines.append(f"Put these files in the folder {dest_dir} :")
    for name in names:
        note = " (the copy there is corrupt)" if name in corrupt else ""
        lines.append(f"  {name}   md5 {checksums[name]}{note}")
    lines.append("(or pass root=... / set MINIDL_DATA to a folder that holds them).")
    if hint:
        lines.append(hint)
    for e in failures:
        for url, reason in e.attempts:
            lines.append(f"  tried {url}: {reason}")
    return "\n".join(lines)
