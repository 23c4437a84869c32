"""Compiling the device images: the plan, the toolchains, Bazel, and collecting images with their manifest."""
