#!/bin/sh
# Installs a Debian package when the program it provides is missing (as root, or with sudo).
# Usage: apt-install.sh PACKAGE 'PROGRAM...' WHY    (PROGRAM: a command name or a path glob)
#   make setup: apt-install.sh chromium chromium "headless PDF printing of the compliance report"
#   make test:  apt-install.sh postgresql '/usr/lib/postgresql/*/bin/initdb initdb' "the deployment test's MLflow backend"
set -e
package=$1 programs=$2 why=$3
present() {
    for p in $programs; do  # unquoted: a glob expands to the installed versions' paths
        { [ -x "$p" ] || command -v "$p"; } >/dev/null 2>&1 && return 0
    done
    return 1
}
present && exit 0
echo "installing Debian's $package ($why)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq "$package" >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$package" >/dev/null; } || true
present || { echo "error: Debian's $package could not be installed ($why); install it by hand" >&2; exit 1; }
