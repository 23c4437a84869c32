"""The aotkernels wheel builder: matrix.yaml -> Bazel-built device images -> wheels."""
