"""The OHIF viewer's published build, fetched from the npm registry and made servable under
any path: ``install`` is what `dicomweb viewer install` (and ``make serve``) runs.

The tarball comes from ``npm pack`` and must match the sha512 pinned here for its version (or
given with DICOMWEB_VIEWER_INTEGRITY): a registry or cache handing out other bytes is refused.
OHIF's build names its own root as "/" in a few places; each is rewritten to the root the page
was served under, and each rewrite must find what it expects, so that a new OHIF version whose
build differs fails at install, not in a browser.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@ohif/app"
# sha512 of the tarball, as the registry publishes it (`npm view @ohif/app@<version> dist.integrity`).
PINNED = {
    "3.13.2": "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==",
}
STAMP = "installed.json"
COMPRESSED_SUFFIXES = (".js", ".css", ".wasm", ".json", ".svg", ".html", ".map")
# Webpack's public path, in the app and in each worker's runtime: the page's root for the app,
# the directory a worker's script was loaded from for a worker (which has no window).
_PUBLIC_PATH = ('__webpack_require__.p = "/"',
                '__webpack_require__.p = ((typeof window !== "undefined" && window.PUBLIC_URL)'
                ' || self.location.pathname.replace(/[^/]*$/, ""))')
REWRITES: tuple[tuple[str, str, str], ...] = (
    # (file name pattern, text, replacement); every pattern must match a file, every text be found
    ("*.js", *_PUBLIC_PATH),
    ("app.bundle.*.js", "browserImportFunction('/dicom-microscopy-viewer/",
     "browserImportFunction(window.PUBLIC_URL + 'dicom-microscopy-viewer/"),
    ("app.bundle.css", "url(/", "url("),
    ("manifest.json", '"/assets/', '"assets/'),
)


class ViewerInstallError(RuntimeError):
    """The viewer could not be installed; the message says why and what to do."""


def integrity_of(data_path: Path) -> str:
    digest = hashlib.sha512()
    with open(data_path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def installed(root: Path, version: str) -> Path | None:
    """The directory of the installed build of ``version`` under ``root``, or None."""
    build = root / f"ohif-{version}"
    try:
        stamp = json.loads((build / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return build if stamp.get("version") == version else None


def install(root: Path, version: str, integrity: str = "", npm: str = "npm") -> Path:
    """Fetch, check and unpack ``@ohif/app@version`` under ``root`` (once: an installed build
    is kept); return its directory."""
    found = installed(root, version)
    if found is not None:
        return found
    expected = integrity or PINNED.get(version)
    if not expected:
        raise ViewerInstallError(f"no sha512 is pinned for {PACKAGE}@{version}: set DICOMWEB_VIEWER_INTEGRITY "
                                 f"to the value of `npm view {PACKAGE}@{version} dist.integrity`")
    if shutil.which(npm) is None:
        raise ViewerInstallError(f"{npm} is not installed: `apt-get install -y npm`, then `dicomweb viewer install`")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".install-") as work:
        tarball = _pack(Path(work), version, npm)
        actual = integrity_of(tarball)
        if not hmac.compare_digest(actual, expected):
            raise ViewerInstallError(f"{PACKAGE}@{version} from the registry has {actual}, not the pinned {expected}")
        build = Path(work) / "build"
        _unpack(tarball, build)
        rewrite(build)
        compress(build)
        (build / STAMP).write_text(json.dumps({"package": PACKAGE, "version": version, "integrity": actual}))
        target = root / f"ohif-{version}"
        if target.exists():   # a broken earlier attempt: its stamp was unreadable
            shutil.rmtree(target)
        os.replace(build, target)
    return target


def _pack(work: Path, version: str, npm: str) -> Path:
    try:
        done = subprocess.run([npm, "pack", f"{PACKAGE}@{version}", "--pack-destination", str(work), "--silent"],
                              capture_output=True, text=True, timeout=900, cwd=work)
    except subprocess.TimeoutExpired:
        raise ViewerInstallError(f"npm pack {PACKAGE}@{version} took over 15 minutes") from None
    tarballs = list(work.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        raise ViewerInstallError(f"npm pack {PACKAGE}@{version} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return tarballs[0]


def _unpack(tarball: Path, into: Path) -> None:
    """The ``package/dist`` tree of the tarball, regular files only (no links, no paths out)."""
    into.mkdir()
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.isfile() or not member.name.startswith("package/dist/"):
                continue
            relative = Path(member.name[len("package/dist/"):])
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise ViewerInstallError(f"the tarball holds a path outside its tree: {member.name!r}")
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    if not (into / "index.html").is_file():
        raise ViewerInstallError("the package has no dist/index.html: not an OHIF build")


def rewrite(build: Path) -> None:
    """Apply REWRITES, each required to change something."""
    for pattern, text, replacement in REWRITES:
        changed = 0
        for path in build.glob(pattern):
            with open(path, encoding="utf-8", newline="") as fh:   # bytes kept as they are but for the rewrite
                content = fh.read()
            if text in content:
                with open(path, "w", encoding="utf-8", newline="") as fh:
                    fh.write(content.replace(text, replacement))
                changed += 1
        if not changed:
            raise ViewerInstallError(f"this OHIF build has no {text!r} in {pattern}: it is laid out unlike the "
                                     f"versions known here (pin one of {', '.join(PINNED)})")


def compress(build: Path) -> None:
    """A gzip copy beside every text or WebAssembly file over 1 KiB (the app bundle is 17 MB, 4 gzipped)."""
    for path in build.rglob("*"):
        if path.suffix in COMPRESSED_SUFFIXES and path.is_file() and path.stat().st_size > 1024:
            with open(path, "rb") as source, gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=6) as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
