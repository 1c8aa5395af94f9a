#!/bin/sh
# Installs Debian's chromium for the console's browser tests when it is missing.
# Never fails `make test`: without it the browser tests skip (or fail under CI=true).
for candidate in "${OMNIBIND_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then exit 0; fi
done
if command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || \
    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) && exit 0
fi
echo "chromium not installed (no apt-get, or not root): the console's browser tests will skip"
exit 0
