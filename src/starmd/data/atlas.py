"""Download ATLAS entries (Vander Meersche et al. 2024, NAR; https://www.dsimb.inserm.fr/ATLAS).

Each entry is served as ``{base_url}/{name}/{name}_protein.zip`` holding ``{name}.pdb`` and
``{name}_prod_R{1,2,3}_fit.xtc`` (protein only, 100 ns per replica, a frame every 10 ps): the
layout ``starmd prepare`` reads. The archive is streamed to a temporary file, checked, and
unpacked into ``dest/{name}/`` through a temporary folder, so an interrupted download never
leaves a half entry; entries already present are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from starmd.data.sources import atlas_replica_xtc
from starmd.errors import StarmdError, StarmdInputError

DEFAULT_BASE_URL = "https://www.dsimb.inserm.fr/ATLAS/database/ATLAS"
BASE_URL_ENV = "STARMD_ATLAS_URL"
_NAME = re.compile(r"^[0-9][0-9a-zA-Z]{3}_[0-9A-Za-z]+$")


class StarmdDownloadError(StarmdError):
    """A download failed (network, HTTP error, corrupt archive)."""


def entry_complete(folder: Path, name: str) -> bool:
    return (folder / f"{name}.pdb").exists() and any(folder.glob(atlas_replica_xtc(name, "*")))


def download_entry(
    name: str,
    dest: str | Path,
    base_url: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download and unpack one ATLAS entry (PDB id + chain, e.g. ``"16pk_A"``).

    Returns:
        The entry folder ``dest/name``.

    Raises:
        StarmdInputError: malformed name.
        StarmdDownloadError: HTTP/network error or an archive without the expected files.
    """
    if not _NAME.match(name):
        raise StarmdInputError(f"{name}: not an ATLAS entry name (PDB id + chain, e.g. 16pk_A)")
    dest = Path(dest)
    target = dest / name
    if entry_complete(target, name):
        return target
    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base}/{name}/{name}_protein.zip"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{name}.") as tmp:
        archive = Path(tmp) / "entry.zip"
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                open(archive, "wb") as fh,
            ):
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                done = 0
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except urllib.error.HTTPError as exc:
            raise StarmdDownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StarmdDownloadError(f"{url}: download failed ({reason})") from exc
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(archive) as zf:
                _safe_extract(zf, unpacked)
        except zipfile.BadZipFile as exc:
            raise StarmdDownloadError(f"{url}: not a valid zip archive") from exc
        found = _find_entry_root(unpacked, name)
        if found is None:
            raise StarmdDownloadError(
                f"{url}: archive lacks {name}.pdb and {atlas_replica_xtc(name, '*')}"
            )
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(found), str(target))
    return target


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    root = dest.resolve()
    for member in zf.namelist():
        if not (root / member).resolve().is_relative_to(root):
            raise StarmdDownloadError(f"archive member escapes the target folder: {member}")
    zf.extractall(dest)


def _find_entry_root(folder: Path, name: str) -> Path | None:
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if entry_complete(candidate, name):
            return candidate
    return None
