"""Writes ``.dvc/plots_offline.html``: DVC's plot page with Vega, Vega-Lite and Vega-Embed inlined,
so that ``dvc plots show`` draws its charts with no network (DVC's own page loads them from a CDN).

``.dvc/config`` names it (``plots.html_template``). The versions are the ones dvc-render's page
asks for; the libraries are BSD-3-Clause (University of Washington Interactive Data Lab), and
their licence travels in the page. A maintenance step, not a run-time one: it fetches the npm
packages with ``npm pack`` (registry access), and the page it writes is committed.

Run: ``python scripts/vendor_vega.py`` (needs npm).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".dvc" / "plots_offline.html"
# (npm package, file in it): the versions dvc_render.vega.VegaRenderer.SCRIPTS loads
PACKAGES = (("vega@5.20.2", "package/build/vega.min.js"), ("vega-lite@5.2.0", "package/build/vega-lite.min.js"),
            ("vega-embed@6.18.2", "package/build/vega-embed.min.js"))  # fmt: skip

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot (offline)</title>
    <!-- {versions}: inlined by scripts/vendor_vega.py so that nothing is fetched.
{licence}
    -->
{inlined}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(package: str, member: str, folder: Path) -> tuple[str, str]:
    """The file ``member`` of the npm package, and the package's licence text."""
    name = (
        subprocess.run(["npm", "pack", package, "--silent"], cwd=folder, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    with tarfile.open(folder / name) as tar:
        script = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
        licence = tar.extractfile("package/LICENSE").read().decode("utf-8")  # type: ignore[union-attr]
    if "</script" in script or "{plot_divs}" in script:
        raise SystemExit(f"{package}: {member} cannot be inlined as it is")
    return script, licence


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fetched = [fetch(package, member, Path(tmp)) for package, member in PACKAGES]
    inlined = "\n".join(f"    <script>{script}</script>" for script, _ in fetched)
    page = PAGE.format(refresh_tag="{refresh_tag}", plot_divs="{plot_divs}", versions=", ".join(p for p, _ in PACKAGES),
                       licence=fetched[0][1].replace("--", "- -"), inlined=inlined)  # fmt: skip
    OUT.write_text(page, encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
