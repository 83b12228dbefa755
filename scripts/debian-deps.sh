#!/usr/bin/env bash
# Install the Debian packages a target needs, when some are missing (idempotent, quick when
# everything is there).  Used by `make demo`, `make test` and .ci/run.
#   scripts/debian-deps.sh demo|test|package        install what is missing
#   scripts/debian-deps.sh list demo|test|package   print the package names
set -euo pipefail

list=0
if [ "${1:-}" = list ]; then
    list=1
    shift
fi

DEMO=(python3 python3-venv)
TEST=("${DEMO[@]}" python3-dev redis-server kamailio sip-tester prometheus chromium)
PACKAGE=("${TEST[@]}" debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
         lintian devscripts fakeroot systemd)

case "${1:-}" in
    demo) wanted=("${DEMO[@]}") ;;
    test) wanted=("${TEST[@]}") ;;
    package) wanted=("${PACKAGE[@]}") ;;
    *) echo "usage: $0 [list] demo|test|package" >&2; exit 2 ;;
esac
if [ $list -eq 1 ]; then
    echo "${wanted[@]}"
    exit 0
fi

command -v dpkg-query >/dev/null 2>&1 || exit 0     # not Debian: the user provides them
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
        || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "missing Debian packages: ${missing[*]} (run as root or install sudo)" >&2
        exit 1
    fi
    sudo=(sudo -E)
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian packages: ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
