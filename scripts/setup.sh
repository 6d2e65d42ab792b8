#!/usr/bin/env bash
# Create .venv in the checkout and install the engine (and the extras named in $1, e.g. "test").
# torch is installed first, pinned, so that pip does not pull a multi-GB CUDA build on a CPU machine.
# With the "test" extra it also makes sure the browser tests' system packages are there (Debian's
# chromium, Mesa's EGL for off-screen rendering), installing them with apt-get when it can.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet -e "$spec"

# The browser tests (Testing/test_web.py): Chromium and EGL, once. Without root or sudo, say what to run;
# the tests then skip with that reason, or fail where MEDDIFFFM_REQUIRE_BROWSER=1 (CI).
case ",$extras," in
*,test,*)
    if ! command -v chromium >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep libEGL_mesa >/dev/null; then
        packages="chromium libegl1 libegl-mesa0"
        if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
        if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup.sh: installing $packages for the browser tests (apt-get)"
            $SUDO apt-get update -qq >/dev/null || true
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null
        else
            echo "setup.sh: the browser tests need: apt-get install -y --no-install-recommends $packages" >&2
        fi
    fi
    ;;
esac
