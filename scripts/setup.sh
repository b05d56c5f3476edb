#!/usr/bin/env bash
# Set up everything neuralpde needs on a Debian machine: FEniCSx from apt (when root), a virtual
# environment that sees it, and the package with its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
VENV=.venv

missing=()
$PY -c "import dolfinx" 2>/dev/null || missing+=(python3-dolfinx-real)
# Debian's h5py is built on the same HDF5 as dolfinx; a PyPI h5py next to dolfinx crashes on import
$PY -c "import h5py" 2>/dev/null || missing+=(python3-h5py)
$PY -c "import ensurepip" 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo ">> installing ${missing[*]} with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    else
        echo "!! missing Debian packages: ${missing[*]}"
        echo "!! install them with:  sudo apt-get install ${missing[*]}"
        if [[ " ${missing[*]} " == *" python3-venv "* ]]; then exit 1; fi
        echo "!! continuing: without dolfinx the embedded scikit-fem reference backend is used"
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo ">> creating $VENV (from $PY, with system site packages so dolfinx is visible)"
    $PY -m venv --system-site-packages "$VENV"
fi
echo ">> installing neuralpde and its dependencies into $VENV"
# torch first and pinned: any other spec pulls GBs of CUDA wheels
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" "numpy<2"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[all]" "torch==2.13.0" "numpy<2"
# neuraloperator pulls h5py from PyPI; next to Debian's dolfinx it must go, so Debian's h5py is used
h5py_location=$("$VENV/bin/python" -m pip show h5py 2>/dev/null | sed -n 's/^Location: //p')
if "$VENV/bin/python" -c "import dolfinx" 2>/dev/null && [[ "$h5py_location" == "$PWD/$VENV"* ]]; then
    "$VENV/bin/python" -m pip uninstall -q -y h5py
fi
if ! "$VENV/bin/python" -c "import h5py" 2>/dev/null; then
    # no Debian h5py (not root): a PyPI h5py is only safe where dolfinx's HDF5 is not loaded
    if "$VENV/bin/python" -c "import dolfinx" 2>/dev/null; then
        echo "!! h5py missing: XDMF output falls back to VTU; install it with: sudo apt-get install python3-h5py"
    else
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[hdf5]" "torch==2.13.0" "numpy<2"
    fi
fi
"$VENV/bin/python" -c "import neuralpde, torch, numpy; print('>> ready: neuralpde', neuralpde.__version__, \
'| torch', torch.__version__, '| numpy', numpy.__version__)"
