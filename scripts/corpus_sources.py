"""Fetch the corpus's source packages and list their image files with license and attribution.

Every source is a package a registry serves: scikit-image, scikit-learn, sporco, matplotlib and
mahotas wheels from PyPI (images read from inside the wheel zip), and Debian packages fetched
with `apt-get download` and unpacked with `dpkg -x`. Licenses come from the package itself: the
DEP-5 copyright file (/usr/share/doc/<pkg>/copyright), KDE wallpaper metadata, skimage's data
docstrings, sklearn's images/README.txt, sporco's data/README.rst, and for matplotlib and mahotas
(no per-file statement) the package's own license.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SKIMAGE_VERSION = "0.26.0"
SKLEARN_VERSION = "1.9.1"
# Debian packages and the versions the corpus was built from (docs/corpus.md): another
# version would bring other photos, groups and split, so it is fetched by version or refused.
DEBIAN_PACKAGES: dict[str, str] = {
    "opencv-doc": "4.6.0+dfsg-12",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "ukui-wallpapers": "20.04.3-1.1",
    "lomiri-wallpapers-16.04": "20.04.0-2",
}

# Wheels with a folder of sample photos: name -> (version, folder, file the license is read from,
# license when that file has no per-image statement).
DATA_WHEELS: dict[str, tuple[str, str, str, str]] = {
    "sporco": ("0.2.2.post1", "sporco/data/", "sporco/data/README.rst", ""),
    "matplotlib": (
        "3.11.2",
        "matplotlib/mpl-data/sample_data/",
        "matplotlib-3.11.2.dist-info/LICENSE",
        "Matplotlib-license (package; no per-file statement)",
    ),
    "mahotas": (
        "1.4.19",
        "mahotas/demos/data/",
        "mahotas-1.4.19.dist-info/METADATA",
        "MIT (package; no per-file statement)",
    ),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")

# Where each Debian package installs the images, and the upstream folder the copyright file's
# `Files:` patterns are written against (DEP-5 patterns are relative to the source tree).
DEBIAN_IMAGE_ROOTS: dict[str, tuple[str, str]] = {
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/data/", "samples/data/"),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers/", ""),
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds/", "20.04/"),
    "ukui-wallpapers": ("usr/share/backgrounds/", ""),
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds/", "16.04/"),
}


@dataclass(frozen=True)
class Candidate:
    """One image file inside a source package, before any filtering."""

    source: str  # package name
    version: str
    path: str  # original path inside the package (wheel member or path in the .deb tree)
    license: str
    license_source: str  # where the license statement was read
    attribution: str
    read: Callable[[], bytes] = field(compare=False, repr=False)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- fetching


def fetch_wheel(name: str, version: str, cache: Path) -> Path:
    """Download one wheel (no dependencies) into cache/wheels unless it is already there."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    found = sorted(wheels.glob(f"{dist}-{version}-*.whl"))
    if not found:
        log(f"pip download {name}=={version}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(wheels),
                f"{name}=={version}",
            ],
            check=True,
        )
        found = sorted(wheels.glob(f"{dist}-{version}-*.whl"))
    if not found:
        raise RuntimeError(f"pip download produced no wheel for {name}=={version}")
    return found[0]


def _deb_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def fetch_deb(package: str, cache: Path) -> tuple[Path, str]:
    """apt-get download one package at its pinned version into cache/debs and dpkg -x it;
    returns (tree, version). Another version is refused, cached or served: its photos would
    make another corpus."""
    version = DEBIAN_PACKAGES[package]
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)

    def cached() -> Path | None:
        return next(
            (d for d in sorted(debs.glob(f"{package}_*.deb")) if _deb_version(d) == version), None
        )

    deb = cached()
    if deb is None:
        log(f"apt-get download {package}={version}")
        fetched = subprocess.run(
            ["apt-get", "download", "-q", f"{package}={version}"], cwd=debs, check=False
        )
        deb = cached()
        if deb is None:
            raise RuntimeError(
                f"{package} {version} (the version the corpus is built from) could not be "
                f"downloaded (apt-get exit {fetched.returncode}): add a Debian source that "
                "serves it, or update DEBIAN_PACKAGES and docs/corpus.md for another corpus"
            )
    tree = cache / "extracted" / f"{package}_{version}"
    if not (tree / ".complete").exists():
        log(f"dpkg -x {deb.name}")
        tree.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True)
        (tree / ".complete").touch()
    return tree, version


# ---------------------------------------------------------------- license parsing


@dataclass(frozen=True)
class CopyrightStanza:
    files: tuple[str, ...]
    copyright: str
    license: str


def parse_dep5(text: str) -> list[CopyrightStanza]:
    """Parse the `Files:` stanzas of a machine-readable Debian copyright file."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields:
            stanzas.append(
                CopyrightStanza(
                    files=tuple(fields["files"].split()),
                    copyright=" ".join(fields.get("copyright", "").split()),
                    license=fields.get("license", "").splitlines()[0].strip()
                    if fields.get("license")
                    else "",
                )
            )
    return stanzas


def match_dep5(stanzas: list[CopyrightStanza], upstream_path: str) -> CopyrightStanza | None:
    """The last stanza whose pattern matches wins, as DEP-5 specifies."""
    hit = None
    for stanza in stanzas:
        if any(fnmatch.fnmatchcase(upstream_path, pattern) for pattern in stanza.files):
            hit = stanza
    return hit


def spdx_from_text(text: str) -> str:
    """A short license identifier for a free-text license statement."""
    low = text.lower()
    cc = re.search(r"creativecommons\.org/licenses/([a-z-]+)/(\d\.\d)", low)
    if cc:
        return f"CC-{cc.group(1).upper()}-{cc.group(2)}"
    if "cc0" in low or "cc-0" in low:
        return "CC0-1.0"
    if "public domain" in low:
        return "public-domain"
    if "no known copyright restrictions" in low:
        return "no-known-copyright-restrictions"
    return "unstated"


def skimage_licenses(fetchers_source: str) -> dict[str, tuple[str, str]]:
    """Map `data/<file>` -> (license id, license sentences) from skimage's loader docstrings."""
    result = {}
    tree = ast.parse(fetchers_source)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        doc = ast.get_docstring(node) or ""
        files = [
            c.value
            for c in ast.walk(node)
            if isinstance(c, ast.Constant)
            and isinstance(c.value, str)
            and re.fullmatch(r"data/[\w.-]+", c.value)
        ]
        text = " ".join(re.sub(r"^\s*\w+\s*\n\s*-{3,}\s*$", "", doc, flags=re.M).split())
        sentences = [
            s.strip()
            for s in re.split(r"(?<=\.)\s+", text)
            if re.search(
                r"copyright|public domain|cc0|cc-0|licen[cs]ed|license:|courtesy|"
                r"photographer|captured by",
                s,
                re.I,
            )
        ]
        statement = " ".join(sentences)
        for f in files:
            result[f] = (spdx_from_text(statement), statement)
    return result


def sklearn_licenses(readme: str) -> dict[str, tuple[str, str, str]]:
    """Map image name -> (license id, statement, attribution) from sklearn's images/README.txt."""
    result = {}
    for block in re.split(r"\n(?=Image: )", readme):
        m = re.match(r"Image:\s*(\S+)", block)
        if not m:
            continue
        attribution = re.search(r"Attribution:\s*(.+)", block)
        urls = re.findall(r"^\[\d\]\s*(https?://\S+)", block, re.M)
        result[m.group(1)] = (
            spdx_from_text(block),
            " ".join(block.split()),
            (
                (attribution.group(1).strip() if attribution else "") + " " + " ".join(urls[1:])
            ).strip(),
        )
    return result


def sporco_licenses(readme: str) -> dict[str, tuple[str, str]]:
    """Map image name -> (license id, statement) from sporco's data/README.rst bullets."""
    preamble = re.search(r"All images in this directory[^\n]*", readme)
    general = preamble.group(0).strip() if preamble else ""
    result = {}
    for bullet in re.findall(r"^\* (.+?)(?=^\* |\Z)", readme, re.M | re.S):
        names, _, text = bullet.partition(" : ")
        text = " ".join(text.split())
        low = text.lower()
        if "unrestricted use" in low:
            lic = "unrestricted-use"
        elif "free of copyright restrictions" in low:
            lic = "no-known-copyright-restrictions"
        else:  # only the README's general statement covers it
            lic = "believed-public-domain-or-redistributable"
        for name in re.findall(r"``([^`]+)``", names):
            result[name] = (lic, f"{general} {text}".strip())
    return result


# ---------------------------------------------------------------- enumerating candidates


def _zip_reader(wheel: Path, member: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)

    return read


def _file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def skimage_candidates(cache: Path) -> Iterator[Candidate]:
    wheel = fetch_wheel("scikit-image", SKIMAGE_VERSION, cache)
    with zipfile.ZipFile(wheel) as z:
        licenses = skimage_licenses(z.read("skimage/data/_fetchers.py").decode())
        members = sorted(n for n in z.namelist() if n.startswith("skimage/data/"))
    for member in members:
        if not member.lower().endswith(IMAGE_SUFFIXES):
            continue
        lic, statement = licenses.get(member.removeprefix("skimage/"), ("unstated", ""))
        yield Candidate(
            source="scikit-image",
            version=SKIMAGE_VERSION,
            path=member,
            license=lic,
            license_source="skimage/data/_fetchers.py docstring",
            attribution=statement,
            read=_zip_reader(wheel, member),
        )


def sklearn_candidates(cache: Path) -> Iterator[Candidate]:
    wheel = fetch_wheel("scikit-learn", SKLEARN_VERSION, cache)
    prefix = "sklearn/datasets/images/"
    with zipfile.ZipFile(wheel) as z:
        licenses = sklearn_licenses(z.read(prefix + "README.txt").decode())
        members = sorted(n for n in z.namelist() if n.startswith(prefix))
    for member in members:
        if not member.lower().endswith(IMAGE_SUFFIXES):
            continue
        lic, _statement, attribution = licenses.get(
            member.removeprefix(prefix), ("unstated", "", "")
        )
        yield Candidate(
            source="scikit-learn",
            version=SKLEARN_VERSION,
            path=member,
            license=lic,
            license_source=prefix + "README.txt",
            attribution=attribution,
            read=_zip_reader(wheel, member),
        )


def data_wheel_candidates(name: str, cache: Path) -> Iterator[Candidate]:
    """The images directly in a ``DATA_WHEELS`` wheel's sample folder."""
    version, prefix, license_file, package_license = DATA_WHEELS[name]
    wheel = fetch_wheel(name, version, cache)
    with zipfile.ZipFile(wheel) as z:
        members = sorted(n for n in z.namelist() if n.rsplit("/", 1)[0] + "/" == prefix)
        licenses = sporco_licenses(z.read(license_file).decode()) if name == "sporco" else {}
    for member in members:
        if not member.lower().endswith(IMAGE_SUFFIXES):
            continue
        lic, statement = licenses.get(member.removeprefix(prefix), (package_license, ""))
        yield Candidate(
            source=name,
            version=version,
            path=member,
            license=lic or "unstated",
            license_source=license_file,
            attribution=statement,
            read=_zip_reader(wheel, member),
        )


def _kde_metadata(wallpaper_dir: Path) -> tuple[str, str]:
    """(license, author) from a KDE wallpaper's metadata.json or metadata.desktop."""
    meta_json = wallpaper_dir / "metadata.json"
    if meta_json.exists():
        plugin = json.loads(meta_json.read_text(encoding="utf-8")).get("KPlugin", {})
        authors = ", ".join(
            a.get("Email", "")
            if "<" in a.get("Email", "")
            else " ".join(
                filter(None, [a.get("Name", ""), f"<{a['Email']}>" if a.get("Email") else ""])
            )
            for a in plugin.get("Authors", [])
        )
        return plugin.get("License", ""), authors
    meta_desktop = wallpaper_dir / "metadata.desktop"
    if meta_desktop.exists():
        text = meta_desktop.read_text(encoding="utf-8")
        lic = re.search(r"^X-KDE-PluginInfo-License=(.*)$", text, re.M)
        author = re.search(r"^X-KDE-PluginInfo-Author=(.*)$", text, re.M)
        email = re.search(r"^X-KDE-PluginInfo-Email=(.*)$", text, re.M)
        return (
            lic.group(1).strip() if lic else "",
            " ".join(
                filter(
                    None,
                    [
                        author.group(1).strip() if author else "",
                        f"<{email.group(1).strip()}>" if email else "",
                    ],
                )
            ),
        )
    return "", ""


def debian_candidates(package: str, cache: Path) -> Iterator[Candidate]:
    tree, version = fetch_deb(package, cache)
    copyright_path = f"usr/share/doc/{package}/copyright"
    stanzas = parse_dep5((tree / copyright_path).read_text(encoding="utf-8", errors="replace"))
    install_root, upstream_root = DEBIAN_IMAGE_ROOTS[package]
    seen: set[Path] = set()
    for file in sorted((tree / install_root).rglob("*")):
        if not file.is_file() or not file.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        real = file.resolve()  # KDE ships one file under many resolution names (symlinks)
        if real in seen:
            continue
        seen.add(real)
        rel = real.relative_to(tree.resolve()).as_posix()
        upstream = upstream_root + rel.removeprefix(install_root)
        stanza = match_dep5(stanzas, upstream)
        lic = stanza.license if stanza else "unstated"
        attribution = stanza.copyright if stanza else ""
        license_source = copyright_path
        if package == "plasma-workspace-wallpapers":
            wallpaper = tree / install_root / rel.removeprefix(install_root).split("/")[0]
            kde_license, author = _kde_metadata(wallpaper)
            if kde_license:
                lic = f"{kde_license} (package: {lic})"
                license_source = (
                    f"{wallpaper.relative_to(tree).as_posix()}/metadata + {copyright_path}"
                )
            attribution = author or attribution
        yield Candidate(
            source=package,
            version=version,
            path=rel,
            license=lic,
            license_source=license_source,
            attribution=attribution,
            read=_file_reader(real),
        )


def all_candidates(cache: Path) -> Iterator[Candidate]:
    """Every image file of every source, in a fixed order."""
    yield from skimage_candidates(cache)
    yield from sklearn_candidates(cache)
    for package in DEBIAN_PACKAGES:
        yield from debian_candidates(package, cache)
    for name in DATA_WHEELS:
        yield from data_wheel_candidates(name, cache)
