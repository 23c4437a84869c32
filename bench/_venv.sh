# shellcheck shell=bash
# Sourced by the GPU-machine scripts (gpu_session.sh, percall_ab.sh, aot_load_ab.sh): mk NAME WHEEL
# makes /tmp/v-NAME, a venv holding that one wheel, which sees the box's numpy/torch/cupy through a .pth
# (the machine has no package registry; pip installs the wheel alone, --no-deps --no-index).
NP=$(python3 -c 'import numpy,os;print(os.path.dirname(os.path.dirname(numpy.__file__)))')
mk() {
  python3 -m venv "/tmp/v-$1" && SP=$("/tmp/v-$1"/bin/python -c 'import site;print(site.getsitepackages()[0])') \
    && echo "$NP" > "$SP/np.pth" && "/tmp/v-$1"/bin/pip install -q --no-deps --no-index "$2" || exit 3
}
