"""Device strings: parsing, backend inference, suffixes, device lists. No subprocesses."""
from __future__ import annotations

import pytest

from build_tools.config import catalog
from build_tools.config.catalog import (
    CUDA,
    INTEL,
    Device,
    UnknownDeviceError,
    parse_device,
)


@pytest.mark.parametrize(("text", "backend"), [
    ("sm_75", CUDA), ("sm_90", CUDA), ("sm_90a", CUDA), ("sm_100f", CUDA), ("compute_80", CUDA),
    ("SM_90", CUDA), (" sm_120 ", CUDA),
    ("pvc", INTEL), ("dg2-g10-c0", INTEL), ("tgllp", INTEL), ("acm-g10", INTEL), ("12.55.8", INTEL),
    ("PVC", INTEL), ("20.1.4", INTEL),
])
def test_infer_backend(text: str, backend: str) -> None:
    assert catalog.infer_backend(text) == backend


@pytest.mark.parametrize("text", ["gfx90a", "sm90", "sm_9", "12.55", "cuda", "", "compute_", "dg2"])
def test_infer_backend_unknown(text: str) -> None:
    assert catalog.infer_backend(text) is None


def test_dg2_g10_c0_resolves_to_ip_version() -> None:
    d = parse_device("dg2-g10-c0")
    assert d == Device(requested="dg2-g10-c0", backend=INTEL, resolved="12.55.8", form=catalog.INTEL_BIN)


def test_intel_names_resolve_to_their_ip_versions() -> None:
    assert parse_device("pvc").resolved == "12.60.7"
    assert parse_device("tgllp").resolved == "12.0.0"
    assert parse_device("acm-g11").resolved == "12.56.5"


def test_ip_version_is_passed_through() -> None:
    d = parse_device("12.60.7")
    assert (d.backend, d.resolved, d.form, d.key) == (INTEL, "12.60.7", catalog.INTEL_BIN, "12.60.7")


def test_cuda_sass_and_ptx_forms() -> None:
    sm = parse_device("sm_90")
    assert (sm.backend, sm.resolved, sm.form, sm.cc, sm.variant) == (CUDA, "sm_90", catalog.SASS, 90, "")
    ptx = parse_device("compute_75")
    assert (ptx.resolved, ptx.form, ptx.cc) == ("compute_75", catalog.PTX, 75)


def test_device_strings_are_normalised_to_lower_case() -> None:
    d = parse_device("  SM_90A ")
    assert d.requested == d.key == d.resolved == "sm_90a"
    assert parse_device("DG2-G10-C0").resolved == "12.55.8"


@pytest.mark.parametrize(("text", "cc", "variant"), [
    ("sm_90a", 90, "a"), ("sm_100a", 100, "a"), ("sm_100f", 100, "f"), ("sm_120f", 120, "f"),
    ("sm_103a", 103, "a"),
])
def test_valid_suffixes(text: str, cc: int, variant: str) -> None:
    d = parse_device(text)
    assert (d.cc, d.variant, d.form, d.resolved) == (cc, variant, catalog.SASS, text)


@pytest.mark.parametrize(("text", "why"), [
    ("sm_90f", "suffix 'f' is not defined for compute capability 9.0 (suffixed forms: sm_90a)"),
    ("compute_90a", "suffix 'a' is not defined for compute capability 9.0"),
    ("sm_80a", "suffix 'a' is not defined for compute capability 8.0 (suffixed forms: none)"),
    ("compute_100f", "suffix 'f' is not defined for compute capability 10.0"),
])
def test_invalid_suffixes(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"device '\w+'") as info:
        parse_device(text)
    assert not isinstance(info.value, UnknownDeviceError)
    assert why in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(("text", "closest"), [
    ("sm_91", "sm_90"),
    ("dg2-g10-c9", "dg2-g10-c0"),
    ("pvcc", "pvc"),
    ("sm_999", None),
])
def test_unknown_device_suggests_closest(text: str, closest: str | None) -> None:
    with pytest.raises(UnknownDeviceError) as info:
        parse_device(text)
    msg = str(info.value)
    assert f"unknown device string {text!r}" in msg
    if closest is not None:
        assert closest in info.value.suggestions
        assert "closest valid: " in msg and closest in msg
        assert len(info.value.suggestions) <= 3


def test_unknown_device_without_any_close_match_has_no_hint() -> None:
    with pytest.raises(UnknownDeviceError) as info:
        parse_device("zzzzzzzzzzzz")
    assert info.value.suggestions == []
    assert "closest valid" not in str(info.value)


def test_backend_mismatch() -> None:
    with pytest.raises(ValueError, match=r"device 'sm_90' is a cuda device, but backend is 'intel'"):
        parse_device("sm_90", backend=INTEL)
    with pytest.raises(ValueError, match=r"device 'pvc' is a intel device, but backend is 'cuda'"):
        parse_device("pvc", backend=CUDA)
    assert parse_device("pvc", backend=INTEL).resolved == "12.60.7"


def test_known_device_strings_cover_suffixes_and_intel_names() -> None:
    known = catalog.known_device_strings()
    for s in ("sm_75", "sm_90a", "sm_100f", "compute_75", "pvc", "dg2-g10-c0", "bmg"):
        assert s in known
    assert "sm_90f" not in known
    assert "compute_90a" not in known
    # every string the catalog advertises must parse
    for s in known:
        parse_device(s)


@pytest.mark.parametrize(("value", "parts"), [
    ("dg2-g10-c0,pvc", ["dg2-g10-c0", "pvc"]),
    ("sm_80; sm_90", ["sm_80", "sm_90"]),
    (" sm_80 , ,sm_90 ", ["sm_80", "sm_90"]),
    ("sm_80 sm_90", ["sm_80", "sm_90"]),
    ("none", ["none"]),
    ("", []),
    (" , ", []),
])
def test_split_devlist(value: str, parts: list[str]) -> None:
    assert catalog.split_devlist(value) == parts


def test_a_family_where_one_device_is_required_names_its_members() -> None:
    with pytest.raises(ValueError, match=r"device 'xe-hpg': a family of 3 devices \(acm-g10, acm-g11, acm-g12\)"):
        parse_device("xe-hpg")
    with pytest.raises(catalog.UnknownDeviceError) as info:
        parse_device("xe-hp")
    assert {"xe-hpg", "xe-hpc"} <= set(info.value.suggestions)
