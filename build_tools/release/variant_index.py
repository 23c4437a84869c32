"""The wheel-variant index of ``build.py indexes``: ``SITE/whl/variants/``.

One PEP 503 index holding the variant wheels (``wheels.naming: variant``), the fat wheel and
``<name>-<version>-variants.json`` (linked from the project page, as PEP 825 asks), so

    UV_PREVIEW_FEATURES=wheel-variants uv pip install aotkernels --index-url <site>/whl/variants/simple/ \\
        --extra-index-url https://pypi.org/simple

installs the GPU's variant, and the fat wheel where none fits (no GPU, an older one, an Intel GPU
under uv, which runs no plugin providers); pip, which does not know variants, skips the variant
files and installs the fat wheel from the same page. dumb-pypi skips both the variant file names and
the JSON file ("Invalid package name"), so these two pages are written here: plain anchors with the
file's sha256 in the URL fragment, in sorted order (repeatable output).
"""
from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from build_tools import inputs, wheelread
from build_tools.inputs import excerpt
from build_tools.errors import ConfigError
from build_tools.package import variants, wheels
from build_tools.wheelread.limits import MAX_TEXT_BYTES, MAX_WHEEL_BYTES

FLAVOUR = "variants"
_INDEX_JSON = re.compile(r"(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)-variants\.json")


def is_variant_file(name: str) -> bool:
    """A variant wheel or a -variants.json: what goes to the variants index, not to a per-flavour one."""
    return variants.split_label(name) is not None or _INDEX_JSON.fullmatch(name) is not None


def install_line(base_url: str) -> str:
    return (f"UV_PREVIEW_FEATURES=wheel-variants uv pip install {wheels.DIST_NAME} "
            f"--index-url {base_url.rstrip('/')}/whl/{FLAVOUR}/simple/ --extra-index-url https://pypi.org/simple")


def _page(title: str, links: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br>\n' for href, text in links)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n{rows}</body></html>\n")


def index_file(variant_wheels: Sequence[Path], given: Sequence[Path],
               proved: Mapping[Path, wheelread.Proved]) -> tuple[str, bytes]:
    """(name, bytes) of ``<name>-<version>-variants.json``, from the wheels' own variant.json.

    The release's wheels jobs upload wheels only, so the file is made here; one given beside the
    wheels (a build's output folder) must say the same. ``proved``: the wheels as the reader proved
    them, so each variant.json is already the builder's own for its label.
    """
    versions = {(m.group("name"), m.group("version")) for w in variant_wheels
                if (m := variants.VARIANT_WHEEL_RE.fullmatch(w.name))}
    if len(versions) != 1:
        raise ConfigError(f"indexes: variant wheels of {len(versions)} versions ({sorted(versions)}); "
                          "publish one version's wheels at a time")
    name, version = versions.pop()
    doc = variants.merge_documents((json.loads(proved[w].spec.variant_json) for w in variant_wheels), "indexes")
    own = {n: variants.PROVIDERS[n] for n in doc["default-priorities"]["namespace"]}
    if doc["providers"] != own:  # the reader proved each variant.json the builder's: said, not assumed
        raise ConfigError(f"indexes: the variant wheels declare providers {excerpt(doc['providers'])}, not this "
                          f"builder's {excerpt(own)}; refusing to publish an index that installs other code")
    data = variants.dumps(doc)
    out = variants.index_name(name, version)
    for g in given:
        if g.name != out or inputs.read_regular_file(g, "indexes", limit=MAX_TEXT_BYTES) != data:
            raise ConfigError(f"indexes: {g.name} does not match the variant wheels beside it (expected {out} "
                              "with their variant.json merged); remove it or give the whole output of one build")
    return out, data


def write(root: Path, files: Sequence[Path], fat: Sequence[Path], proved: Mapping[Path, wheelread.Proved]) -> list[str]:
    """``root/packages/`` (the files) and ``root/simple/`` (the index); returns the file names.

    ``files``: the variant wheels (and any -variants.json beside them); ``fat``: the fat wheels.
    """
    wheel_files = [f for f in files if f.name.endswith(".whl")]
    json_name, json_data = index_file(wheel_files, [f for f in files if _INDEX_JSON.fullmatch(f.name)], proved)
    if not fat:
        raise ConfigError("indexes: variant wheels without the fat wheel; an installer that finds no variant for "
                          "the machine (or pip) needs it: give every wheel of the release")
    project = canonicalize_name(wheels.DIST_NAME)
    everything = sorted([*wheel_files, *fat], key=lambda p: p.name)
    (root / "packages").mkdir(parents=True)
    (root / "simple" / project).mkdir(parents=True)
    for f in everything:
        inputs.copy_regular(f, root / "packages" / f.name, "indexes", limit=MAX_WHEEL_BYTES)  # bounded, regular only
    (root / "packages" / json_name).write_bytes(json_data)
    links = []
    for n in sorted([*(f.name for f in everything), json_name]):
        digest = hashlib.sha256((root / "packages" / n).read_bytes()).hexdigest()
        links.append((f"../../packages/{n}#sha256={digest}", n))
    (root / "simple" / project / "index.html").write_text(_page(f"Links for {project}", links), encoding="utf-8")
    (root / "simple" / "index.html").write_text(_page("Simple index", [(f"{project}/", project)]), encoding="utf-8")
    return [n for _, n in links]
