#!/usr/bin/env bash
# What the browser tests (tests/test_web.py) need beyond the Python packages of the test extra:
# Debian's Chromium, which Playwright drives at /usr/bin/chromium (Playwright's own browser
# download cannot reach its servers here). Run as root: bash .ci/install-browser.sh
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
/usr/bin/chromium --version 2> /dev/null  # its wrapper script warns on stderr
