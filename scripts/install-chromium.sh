#!/bin/sh
# Installs Debian's chromium when it is missing: the report stage prints the compliance report
# to PDF with it (headless), and the browser tests drive it. Called by `make setup`.
set -e
command -v chromium >/dev/null 2>&1 && exit 0
echo "installing Debian's chromium (headless PDF printing of the compliance report)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; }
command -v chromium >/dev/null 2>&1 || { echo "error: chromium could not be installed; install it, or set params.yaml report.browser to a Chromium/Chrome binary" >&2; exit 1; }
