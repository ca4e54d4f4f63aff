#!/usr/bin/env bash
# Takes the README's screenshots (docs/screenshots/*.png) in Debian's
# Chromium, against a debug server of their own on a fresh embedded
# database. Needs what `bash scripts/setup.sh --test` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo leptos build
cd end2end
npx playwright test -c screenshots.config.ts
