#!/usr/bin/env bash
# Rebuild the sample report shown in the user guide (docs/sample/), the screenshots of each page
# kind on a desktop and a phone, light and dark (docs/images/, README's layer-page.png among them) and
# the contact sheet of render kinds,
# with reportgen itself. Run from the repository root after `pip install -e '.[test]'`.
set -euo pipefail
out=${1:-build/sample}
reportgen build --out "$out" -q
rm -rf docs/sample
cp -r "$out/docs" docs/sample
python tests/browser.py "$out/site" docs/images
python scripts/contact_sheet.py "$out" docs/images/contact-sheet.webp
