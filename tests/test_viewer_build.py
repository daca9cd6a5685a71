"""Installing the viewer's build: the tarball checked against its pinned sha512, unpacked
without leaving its tree, its root rewritten. A stand-in ``npm`` hands out tarballs here; the
real registry's is installed by tests/test_browser.py."""
import io
import stat
import sys
import tarfile

import pytest

from service.viewer.build import ViewerInstallError, install, installed, integrity_of, rewrite

APP = b'(() => {\n__webpack_require__.p = "/";\n})();\nbrowserImportFunction(\'/dicom-microscopy-viewer/x.js\');\n'


def tarball(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:   # a symbolic link out of the tree
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                archive.addfile(info)
                continue
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def ohif_members(**extra):
    return {"package/package.json": b"{}", "package/dist/index.html": b'<script src="/app-config.js"></script>',
            "package/dist/app.bundle.0123456789abcdef.js": APP * 100, "package/dist/app.bundle.css": b"a{b:url(/f.woff2)}",
            "package/dist/manifest.json": b'{"icons": [{"src": "/assets/i.png"}]}', **extra}


def fake_npm(tmp_path, made):
    """An ``npm`` whose ``pack`` copies the tarball ``made`` to --pack-destination."""
    script = tmp_path / "npm"
    script.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                      "destination = sys.argv[sys.argv.index('--pack-destination') + 1]\n"
                      f"shutil.copy({str(made)!r}, destination + '/ohif-app-9.9.9.tgz')\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_build_whose_sha512_matches_is_unpacked_and_rewritten(tmp_path):
    made = tmp_path / "app.tgz"
    tarball(made, ohif_members())
    root = tmp_path / "viewer"
    build = install(root, "9.9.9", integrity_of(made), npm=fake_npm(tmp_path, made))
    assert build == root / "ohif-9.9.9" == installed(root, "9.9.9")
    app = (build / "app.bundle.0123456789abcdef.js").read_text()
    assert '__webpack_require__.p = "/"' not in app and "window.PUBLIC_URL" in app and "self.location.pathname" in app
    assert "browserImportFunction(window.PUBLIC_URL + 'dicom-microscopy-viewer/x.js')" in app
    assert (build / "app.bundle.css").read_text() == "a{b:url(f.woff2)}"
    assert '"assets/i.png"' in (build / "manifest.json").read_text()
    assert (build / "app.bundle.0123456789abcdef.js.gz").is_file()   # over 1 KiB: compressed beside
    assert not (build / "package.json").exists() and not list(root.glob(".install-*"))
    assert install(root, "9.9.9", "sha512-ignored-once-installed", npm="/nonexistent") == build


def test_a_tarball_unlike_the_pinned_one_is_refused(tmp_path):
    made = tmp_path / "app.tgz"
    tarball(made, ohif_members())
    with pytest.raises(ViewerInstallError, match="not the pinned"):
        install(tmp_path / "viewer", "9.9.9", "sha512-" + "A" * 86 + "==", npm=fake_npm(tmp_path, made))
    assert installed(tmp_path / "viewer", "9.9.9") is None and not list((tmp_path / "viewer").iterdir())


def test_a_version_without_a_pinned_digest_needs_one(tmp_path):
    with pytest.raises(ViewerInstallError, match="DICOMWEB_VIEWER_INTEGRITY"):
        install(tmp_path / "viewer", "0.0.1-unknown")


def test_no_npm_says_how_to_get_it(tmp_path):
    with pytest.raises(ViewerInstallError, match="apt-get install -y npm"):
        install(tmp_path / "viewer", "3.13.2", npm="npm-that-is-not-installed")


@pytest.mark.parametrize("member", ["package/dist/../../escape.js", "package/dist/assets/link"])
def test_nothing_leaves_the_tree(tmp_path, member):
    made = tmp_path / "app.tgz"
    tarball(made, ohif_members(**{member: None if member.endswith("link") else b"x"}))
    try:
        build = install(tmp_path / "viewer", "9.9.9", integrity_of(made), npm=fake_npm(tmp_path, made))
    except ViewerInstallError as exc:
        assert "outside" in str(exc)
        return
    assert not (build / "assets" / "link").exists() and not (tmp_path / "escape.js").exists()


def test_a_build_laid_out_otherwise_fails_at_install_not_in_a_browser(tmp_path):
    (tmp_path / "index.html").write_text("<html></html>")
    (tmp_path / "app.bundle.1.js").write_text("no public path here")
    with pytest.raises(ViewerInstallError, match="__webpack_require__"):
        rewrite(tmp_path)
