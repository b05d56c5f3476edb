#!/usr/bin/env bash
# Run the default test suite inside a Debian 13 (trixie) root: FEniCSx/dolfinx 0.9, Python 3.13 and
# torch, numpy, scipy, h5py from Debian; the pure-Python dependencies by pip in a venv made with
# --system-site-packages (never a second torch). The root lives in .debian13/ (ignored) and is reused;
# `make clean-debian13` removes it.
#
# Without root rights or without network the stage is skipped with one message, except in CI
# (CI=true), where that is a failure. Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$PWD
ROOT=${DEBIAN13_ROOT:-$PROJECT/.debian13}
SUITE=trixie
STAMP=.neuralpde-provisioned

skip() {
    echo "!! Debian 13 stage skipped: $*" >&2
    if [ "${CI:-}" = true ]; then echo "!! (CI=true: this is a failure)" >&2; exit 1; fi
    exit 0
}

# The Debian mirror this machine's apt already uses (deb822 .sources or one-line sources.list).
debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN{RS=""} /Suites:/ && !/security/ {
                 for (i = 1; i <= NF; i++) if ($i == "URIs:") { print $(i+1); exit } }' "$f"
    done | head -n1 | grep . && return 0
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        | head -n1 | grep .
}

[ "$(id -u)" = 0 ] || skip "building the root needs root rights (debootstrap, chroot, mount)"
MIRROR=$(debian_mirror) || skip "no Debian mirror found in apt's sources"

if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ ! -f "$ROOT/.debootstrap-done" ]; then
    if ! command -v debootstrap >/dev/null; then
        echo ">> installing debootstrap"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; } >/dev/null \
            || skip "could not install debootstrap (no network?)"
    fi
    echo ">> debootstrap $SUITE into $ROOT (about 2 minutes)"
    rm -rf "$ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$PROJECT/.debian13.log" 2>&1 \
        || { tail -n 5 "$PROJECT/.debian13.log" >&2; rm -rf "$ROOT"; skip "debootstrap failed (no network?)"; }
    touch "$ROOT/.debootstrap-done"
fi

MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mount_in() {   # mount_in TARGET MOUNT-ARGS...: mount inside the root, remembered for cleanup
    local target="$ROOT$1"; shift
    mkdir -p "$target"
    mountpoint -q "$target" && return 0
    mount "$@" "$target"
    MOUNTED+=("$target")
}
mount_in /proc -t proc proc
mount_in /sys -t sysfs sys
mount_in /dev --bind /dev
mount_in /dev/pts --bind /dev/pts
mount_in /dev/shm -t tmpfs shm
# /project must be this checkout: a bind left by an interrupted earlier run (of another clone, maybe one since
# deleted) is dropped first; the other mounts are the same for every run and are reused
if mountpoint -q "$ROOT/project"; then
    umount "$ROOT/project" 2>/dev/null || umount -l "$ROOT/project"
fi
mount_in /project --bind "$PROJECT"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp -L /etc/hosts "$ROOT/etc/hosts"      # torchrun's rendezvous resolves this machine's host name
# this machine's CA bundle (it may hold a TLS-intercepting proxy's CA that pip must trust too)
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
CERT_ENV=()
if [ -f "$HOST_CA" ]; then
    mkdir -p "$ROOT/etc/ssl/certs"
    cp -L "$HOST_CA" "$ROOT/etc/ssl/certs/host-ca.crt"
    CERT_ENV=(PIP_CERT=/etc/ssl/certs/host-ca.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca.crt)
fi

in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
        PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PYVISTA_OFF_SCREEN=true ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} "${CERT_ENV[@]}" "$@"
}

want=$(cat pyproject.toml scripts/debian13.sh | sha256sum | cut -c1-16)
if [ "$(cat "$ROOT/$STAMP" 2>/dev/null)" != "$want" ]; then
    echo ">> installing Debian 13 packages (dolfinx, torch, scipy, h5py, meshio, pyvista) in the root"
    in_root bash -euo pipefail -c '
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get --fix-broken install -y -q >/dev/null
        apt-get install -y -q --no-install-recommends python3-dolfinx-real python3-torch python3-scipy \
            python3-h5py python3-meshio python3-pyvista python3-matplotlib python3-sympy python3-yaml \
            python3-venv python3-pip python3-setuptools python3-gmsh openmpi-bin ca-certificates gcc libc6-dev xvfb xauth >/dev/null
    ' || skip "apt-get in the Debian 13 root failed (no network?)"
    echo ">> creating /opt/venv in the root and installing the pure-Python dependencies"
    in_root bash -euo pipefail -c '
        [ -x /opt/venv/bin/python ] || python3 -m venv --system-site-packages /opt/venv
        cd /project
        # what Debian provides stays as it is: pin it, so no dependency pulls a second torch or numpy
        python3 -c "import torch, numpy, scipy; print(\"torch==\" + torch.__version__.split(\"+\")[0]); \
print(\"numpy==\" + numpy.__version__); print(\"scipy==\" + scipy.__version__)" > /tmp/constraints.txt
        python3 - > /tmp/requirements.txt <<PY
import re, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(p["dependencies"])
for extra in ("viz", "dev", "pinn", "node", "fno"):
    reqs += p["optional-dependencies"][extra]
provided = {"torch", "numpy", "scipy", "h5py", "meshio", "pyvista", "matplotlib", "sympy", "pyyaml", "gmsh"}
for r in reqs:
    if re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() not in provided:
        print(r)
PY
        /opt/venv/bin/pip install -q -c /tmp/constraints.txt -r /tmp/requirements.txt
        /opt/venv/bin/pip install -q --no-deps --no-build-isolation -e /project
        # a PyPI h5py (pulled by neuraloperator) clashes with the HDF5 of Debian dolfinx
        if [[ "$(/opt/venv/bin/pip show h5py 2>/dev/null | sed -n "s/^Location: //p")" == /opt/venv* ]]; then
            /opt/venv/bin/pip uninstall -q -y h5py
        fi
    ' || skip "pip in the Debian 13 root failed (no network?)"
    echo "$want" > "$ROOT/$STAMP"
fi

in_root python3 -c "import dolfinx, torch, numpy, sys; print('>> Debian 13 root: dolfinx', dolfinx.__version__, \
'| python', sys.version.split()[0], '| torch', torch.__version__, '| numpy', numpy.__version__)"
echo ">> running the test suite in the Debian 13 root"
# Debian's VTK renders through X only (no OSMesa/EGL build): PyVista gets a virtual screen
in_root bash -c 'cd /project && xvfb-run -a -s "-screen 0 1600x1200x24" \
    /opt/venv/bin/python -m pytest -p no:cacheprovider "$@"' pytest "$@"

# The same case files on both FEniCSx versions (dolfinx backend, LU) must give the same errors.
[ -n "${SKIP_CROSS_VERSION:-}" ] && exit 0
echo ">> the same cases on dolfinx 0.5.2 (Debian 12) and 0.9.0 (Debian 13)"
CROSS=(--smoke -q --set reference.backend=dolfinx --set reference.solver.type=lu
       --set method.backend=dolfinx --set method.solver.type=lu)
rm -rf out/cross_version
for case in poisson heat poisson_lshape; do
    .venv/bin/neuralpde run "cases/$case.yaml" "${CROSS[@]}" --out "out/cross_version/debian12/$case" >/dev/null
    in_root bash -c 'cd /project && exec xvfb-run -a /opt/venv/bin/neuralpde run "$@" >/dev/null' run "cases/$case.yaml" \
        "${CROSS[@]}" --out "out/cross_version/debian13/$case"
done
.venv/bin/python scripts/cross_version.py out/cross_version/debian12 out/cross_version/debian13 --rtol 1e-8
