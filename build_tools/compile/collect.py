"""After Bazel: copy the images out of bazel-bin into the output folder and write their manifest.

Shared by the command line and the PEP 517 backend, so both collect images alike.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from build_tools import outdir
from build_tools.compile import bazel, includes, manifest
from build_tools.compile.plan import Plan


def collect_images(plan: Plan, images_dir: Path, env: Mapping[str, str], keys: set[str] | None = None) -> list[manifest.Image]:
    bazel_bin = bazel.bazel_bin(plan, env)
    includes.check(plan, bazel_bin, keys)  # a header Bazel does not track: refused before any image is copied
    images = manifest.collect(plan, bazel_bin, images_dir, keys)
    doc = manifest.document(plan, images, manifest.modules_doc(images_dir, images))
    outdir.write_text_atomic(images_dir / manifest.MANIFEST_NAME, manifest.dumps(doc))
    return images


def build_images(plan: Plan, targets: list[str], options: bazel.BazelOptions, env: Mapping[str, str],
                 images_dir: Path, keys: set[str] | None = None) -> tuple[bazel.BuildStats, list[manifest.Image]]:
    """Bazel builds ``targets``, then their images and manifest are copied out of bazel-bin, all
    under the checkout lock: a concurrent build in this checkout waits instead of rewriting the
    generated files or bazel-bin in between (bazel.checkout_lock)."""
    with bazel.checkout_lock(plan.root):
        stats = bazel.build(plan, targets, options, env)
        images = collect_images(plan, images_dir, env, keys)
    return stats, images


__all__ = ["build_images", "collect_images"]
