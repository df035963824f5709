"""Copy the dashboard's pinned browser libraries (Vue 3, lightweight-charts) into web/vendor/.

Each npm tarball is checked against the registry's ``dist.integrity`` (sha512) pinned below
before anything is extracted; ``web/vendor/VENDOR.json`` records what was copied and the
sha256 of every file, so a second run with nothing changed downloads nothing, and
``--check`` verifies the committed files offline. Bumping a version: ``npm view vue@X
dist.tarball dist.integrity``, update the pin, run this script, commit web/vendor/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "web" / "vendor"
MANIFEST = VENDOR / "VENDOR.json"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    #: the registry's dist.integrity for this exact version
    integrity: str
    #: path inside the tarball -> file name under web/vendor/
    files: dict[str, str]

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name}-{self.version}.tgz"


PINS = (
    Pin(
        "vue",
        "3.5.45",
        "sha512-3cvsib8m9c0vB24+MDKsgcW4+Da4xaBl9Z/5Tbm2pmSIsRPxcil4cdXjXlVsmJ2g64XJo5h+IRd7rsdGT9pZaw==",
        {
            "package/dist/vue.global.prod.js": "vue.global.prod.js",
            "package/LICENSE": "vue.LICENSE",
        },
    ),
    Pin(
        "lightweight-charts",
        "5.2.1",
        "sha512-IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ==",
        {
            "package/dist/lightweight-charts.standalone.production.js": (
                "lightweight-charts.standalone.production.js"
            ),
            "package/LICENSE": "lightweight-charts.LICENSE",
        },
    ),
)


class VendorError(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_integrity(pin: Pin, tarball: bytes) -> None:
    algo, _, expected = pin.integrity.partition("-")
    if algo != "sha512":
        raise VendorError(f"{pin.name}: only sha512 integrity is supported, got {algo}")
    actual = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if actual != expected:
        raise VendorError(
            f"{pin.name}@{pin.version}: tarball integrity mismatch "
            f"(expected sha512-{expected}, got sha512-{actual})"
        )


def extract(pin: Pin, tarball: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member_name, dest in pin.files.items():
            member = archive.extractfile(member_name)
            if member is None:
                raise VendorError(f"{pin.name}@{pin.version}: {member_name} missing in tarball")
            out[dest] = member.read()
    return out


def load_manifest() -> dict[str, dict[str, object]]:
    if not MANIFEST.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(MANIFEST.read_text())
    return data


def up_to_date(pin: Pin, entry: dict[str, object] | None) -> list[str]:
    """Why ``pin`` needs vendoring again (empty: the files on disk are the pinned ones)."""
    if entry is None:
        return ["not vendored yet"]
    problems = []
    if entry.get("version") != pin.version or entry.get("integrity") != pin.integrity:
        problems.append(f"manifest has {entry.get('version')}, pin is {pin.version}")
    hashes = entry.get("files")
    if not isinstance(hashes, dict) or set(hashes) != set(pin.files.values()):
        return [*problems, "manifest file list differs from the pin"]
    for dest, digest in hashes.items():
        path = VENDOR / dest
        if not path.exists():
            problems.append(f"{dest} missing")
        elif sha256(path.read_bytes()) != digest:
            problems.append(f"{dest} changed since it was vendored")
    return problems


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
    return body


def vendor(registry: str, force: bool) -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    changed = False
    for pin in PINS:
        problems = up_to_date(pin, manifest.get(pin.name))
        if not problems and not force:
            print(f"{pin.name}@{pin.version}: up to date")
            continue
        url = pin.tarball_url(registry)
        print(f"{pin.name}@{pin.version}: {'; '.join(problems) or 'forced'}; fetching {url}")
        tarball = fetch(url)
        check_integrity(pin, tarball)
        files = extract(pin, tarball)
        for dest, data in files.items():
            tmp = VENDOR / (dest + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(VENDOR / dest)
        manifest[pin.name] = {
            "version": pin.version,
            "tarball": url,
            "integrity": pin.integrity,
            "files": {dest: sha256(data) for dest, data in sorted(files.items())},
        }
        changed = True
    stale = set(manifest) - {pin.name for pin in PINS}
    for name in sorted(stale):
        entry = manifest.pop(name)
        for dest in entry.get("files", {}) or {}:  # type: ignore[union-attr]
            (VENDOR / dest).unlink(missing_ok=True)
        print(f"{name}: no longer pinned, removed")
        changed = True
    if changed:
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        tmp = MANIFEST.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(MANIFEST)
    return 0


def check() -> int:
    manifest = load_manifest()
    bad = False
    for pin in PINS:
        for problem in up_to_date(pin, manifest.get(pin.name)):
            print(f"{pin.name}@{pin.version}: {problem}", file=sys.stderr)
            bad = True
    if not bad:
        print("web/vendor matches the pins")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify web/vendor offline")
    parser.add_argument("--force", action="store_true", help="re-download even if up to date")
    parser.add_argument("--registry", default=REGISTRY, help="npm registry base URL")
    args = parser.parse_args(argv)
    try:
        return check() if args.check else vendor(args.registry, args.force)
    except (VendorError, OSError) as exc:
        print(f"vendor_web: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
