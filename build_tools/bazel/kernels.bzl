"""One Bazel action per (kernel module, device image).

The list of images comes from //build_tools/bazel/generated:images.bzl, which
`python build_tools/build.py` writes from matrix.yaml (nothing here lists devices by hand).
Every image has its own target, `<module>__<image key>`, so asking for a subset of devices
is asking for a subset of targets: Bazel's configuration never changes, and per-target and
fat wheels draw on the same cached outputs.

Each image entry gives the compiler's argument list with placeholders; the rule only fills
them in. A new vendor is therefore a new Python toolchain module, not a Starlark change.
Only core Starlark available since Bazel 4 is used (no rules removed in Bazel 7/8).
"""

load("//build_tools/bazel/generated:images.bzl", "AOT_IMAGES")

def _expand(arg, subst):
    for key, value in subst.items():
        arg = arg.replace("{" + key + "}", value)
    return arg

def _aot_image_impl(ctx):
    out = ctx.actions.declare_file(ctx.attr.out)
    src = ctx.file.src
    base = out.basename
    outputs = [out]
    subst = {
        "src": src.path,
        "out": out.path,
        "out_dir": out.dirname,
        "out_base": base,
        "out_stem": base.rsplit(".", 1)[0] if "." in base else base,
        "include": ctx.file.include_marker.dirname,
    }
    if ctx.attr.deps:
        # The files the compiler read, as it reports them (-MD): build_tools/compile/includes.py refuses
        # a header that is not an input of this action (it comes from the cache with the image).
        deps = ctx.actions.declare_file(ctx.attr.out + ".d")
        outputs.append(deps)
        subst["deps"] = deps.path
    argv = [_expand(a, subst) for a in ctx.attr.argv]
    ctx.actions.run(
        executable = argv[0],
        arguments = argv[1:],
        inputs = [src, ctx.file.stamp] + ctx.files.hdrs,
        outputs = outputs,
        mnemonic = ctx.attr.mnemonic,
        progress_message = "AOT %s %s for %s" % (ctx.attr.form, ctx.attr.module, ctx.attr.device),
        use_default_shell_env = True,
    )
    # The image alone is the target's file (ocloc's actions take the OpenCL C source target as their one src);
    # the dependency list is an output of the same action, so it is written (or fetched from the cache) with it.
    return [DefaultInfo(files = depset([out])), OutputGroupInfo(aot_deps = depset(outputs[1:]))]

aot_image = rule(
    implementation = _aot_image_impl,
    attrs = {
        "src": attr.label(allow_single_file = True, mandatory = True),
        "hdrs": attr.label_list(allow_files = True),
        "include_marker": attr.label(allow_single_file = True, mandatory = True),
        "stamp": attr.label(allow_single_file = True, mandatory = True),
        "argv": attr.string_list(mandatory = True),
        "out": attr.string(mandatory = True),
        "module": attr.string(mandatory = True),
        "device": attr.string(mandatory = True),
        "form": attr.string(mandatory = True),
        "mnemonic": attr.string(default = "AotImage"),
        "deps": attr.bool(default = False),
    },
)

def kernel_module(name, src, hdrs, backends = None, include_marker = None):
    """All images of one kernel module: `<name>__<key>` per entry of AOT_IMAGES.

    `backends` limits the images to those backends (a native CUDA module: ["cuda"]); the
    Python side (build_tools/compile/plan.py, MODULE_SUFFIXES) asks for exactly these targets.
    `include_marker` is a file whose folder becomes -I (default: the first header).
    """
    targets = []
    for image in AOT_IMAGES:
        if backends != None and image["backend"] not in backends:
            continue
        target = "%s__%s" % (name, image["key"])
        if image["input"] == "source":
            image_src = ":%s__%s" % (name, image["source_key"])
        else:
            image_src = src
        aot_image(
            name = target,
            src = image_src,
            hdrs = hdrs,
            include_marker = include_marker or hdrs[0],
            stamp = image["stamp"],
            argv = image["argv"],
            out = "images/%s/%s/%s.%s" % (image["backend"], image["device"], name, image["ext"]),
            module = name,
            device = image["device"],
            form = image["form"],
            mnemonic = image["mnemonic"],
            deps = image.get("deps", 0) == 1,
        )
        targets.append(":" + target)
    native.filegroup(name = name, srcs = targets)
