#!/usr/bin/env bash
# Set up .venv and, when run as root with apt, the Debian packages some tests use (chromium for the
# report's browser test, dataset-fashion-mnist for the image loader on the real files); then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "setup: could not install ${missing[*]}; the tests that need them will be skipped"
fi
exec .venv/bin/python -m pytest "$@"
