"""Per-target wheels as wheel variants (PEP 825, Draft; the format ``variantlib`` 0.2.2 writes).

With ``wheels.naming: variant`` each target's wheel keeps the public version and carries its label
(today's local label) after the platform tag, ``aotkernels-0.1.0-cp39-abi3-manylinux_2_34_x86_64-sm90.whl``,
with a ``variant.json`` in its ``.dist-info`` holding the target's properties (config/variantprops.py).

Every wheel of a build declares the same providers (each namespace the whole matrix uses) and
priorities, so ``<name>-<version>-variants.json`` is the union of their variant.json files. NVIDIA's
provider is declared exactly as uv's built-in one expects (uv 0.13.9 skips it under any other range or
with a marker); uv runs no plugin providers, so under uv an Intel GPU gets the fat wheel, while
variantlib's resolver runs this project's Intel plugin. The fat wheel stays the only wheel without a
label: a null variant would beat it on machines without a GPU. The JIT-only wheel keeps its local
version (``+jit``): no installer can pick it by hardware.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from build_tools.config.model import Target
from build_tools.config.variantprops import INTEL, NVIDIA, PRIORITY, Properties, namespaces, target_properties
from build_tools.errors import ConfigError

__all__ = ["INTEL", "NVIDIA", "PRIORITY", "Properties", "namespaces", "target_properties"]

VARIANT_JSON = "variant.json"
# variantlib 0.2.2 writes this $schema; PEP 825 names v0.1.1, and uv 0.13.9 reads both.
SCHEMA_URL = "https://variants-schema.wheelnext.dev/v0.2.0.json"
# Exactly as uv's built-in NVIDIA provider wants it: a tighter range or a marker and uv skips it.
NVIDIA_PROVIDER = {"requires": ["nvidia-variant-provider>=0.0.1,<1"],
                   "plugin-api": "nvidia_variant_provider.plugin:NvidiaVariantPlugin"}
# This project's own plugin, built from providers/intel (its pyproject.toml has the same version).
INTEL_PROVIDER_DIST = "aotkernels-intel-variant-provider"
INTEL_PROVIDER_VERSION = "0.1.0"
INTEL_PROVIDER = {"requires": [f"{INTEL_PROVIDER_DIST}=={INTEL_PROVIDER_VERSION}"],
                  "plugin-api": "aotkernels_intel_variant_provider.plugin:IntelVariantPlugin"}
PROVIDERS = {NVIDIA: NVIDIA_PROVIDER, INTEL: INTEL_PROVIDER}
# A variant label (PEP 825): lower-case letters, digits, '.' and '_'; "null" is the null variant's.
LABEL_RE = re.compile(r"[0-9a-z._]+")
# name-version-python-abi-platform-label.whl; the label is what the five-part form cannot have.
# The python tag starts with a letter (cp39, py3): a six-part name whose third part starts with a digit is
# name-version-BUILD-python-abi-platform.whl (PEP 427's build tag), not a variant.
VARIANT_WHEEL_RE = re.compile(r"(?P<base>(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)"
                              r"-(?P<tag>[A-Za-z_][A-Za-z0-9_.]*-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+))-(?P<label>[0-9a-z._]+)\.whl")


def check_label(label: str, field: str) -> str:
    if not LABEL_RE.fullmatch(label) or label == "null":
        raise ConfigError(f"{field}: variant label {label!r} is not made of a-z, 0-9, '.' and '_' only (PEP 825); "
                          "use naming: local-version")
    return label


def document(label: str, props: Mapping[str, Mapping[str, Sequence[str]]], used: Sequence[str]) -> dict[str, Any]:
    """variant.json (one variant) or, with several labels merged, the -variants.json index file."""
    return {"$schema": SCHEMA_URL, "default-priorities": {"namespace": list(used)},
            "providers": {n: PROVIDERS[n] for n in used},
            "variants": {label: {n: {f: list(v) for f, v in fs.items()} for n, fs in props.items()}}}


def dumps(doc: Mapping[str, Any]) -> bytes:
    """As variantlib writes it (indent 4, sorted keys), so its tools and ours give the same bytes."""
    return (json.dumps(doc, indent=4, sort_keys=True)).encode("utf-8")


def split_label(wheel_name: str) -> tuple[str, str] | None:
    """(the five-part file name, the label) of a variant wheel's file name, else None."""
    m = VARIANT_WHEEL_RE.fullmatch(wheel_name)
    return (f"{m.group('base')}.whl", m.group("label")) if m else None


def index_name(name: str, version: str) -> str:
    """``<name>-<version>-variants.json``, with the name escaped as in wheel file names."""
    return f"{canonicalize_name(name).replace('-', '_')}-{version}-variants.json"


def merge_documents(docs: Iterable[Mapping[str, Any]], show: str = "the wheels") -> dict[str, Any]:
    """The -variants.json of several variant.json files: one build's providers and priorities, every label."""
    out: dict[str, Any] | None = None
    for doc in docs:
        if out is None:
            out = {k: v for k, v in doc.items() if k != "variants"} | {"variants": {}}
        elif {k: v for k, v in doc.items() if k != "variants"} != {k: v for k, v in out.items() if k != "variants"}:
            raise ConfigError(f"{show}: variant.json files declare different providers or priorities; "
                              "use wheels of one build")
        for label, props in doc.get("variants", {}).items():
            if out["variants"].setdefault(label, props) != props:
                raise ConfigError(f"{show}: variant {label!r} has two different property sets; use wheels of one build")
    if out is None:
        raise ConfigError(f"{show}: no variant wheels")
    out["variants"] = dict(sorted(out["variants"].items()))
    return out


def variant_json(target: Target, label: str, all_targets: Sequence[Target]) -> str:
    """The variant.json text of one target's wheel (label: its local label), or a ConfigError.

    Providers and priorities come from the whole matrix (``all_targets``), so wheels built on
    separate machines from one matrix declare the same ones and their -variants.json merges.
    """
    props = target_properties(target)
    label = check_label(label, f"targets[{target.name!r}]")
    return dumps(document(label, props, namespaces(all_targets))).decode("utf-8")


def write_index(out_dir: Path, name: str, version: str, texts: Sequence[str]) -> Path | None:
    """``<name>-<version>-variants.json`` beside the wheels, from their variant.json texts; None without any."""
    if not texts:
        return None
    doc = merge_documents(json.loads(t) for t in texts)
    path = out_dir / index_name(name, version)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(dumps(doc))
    os.replace(tmp, path)
    return path
