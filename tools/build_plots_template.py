"""Build templates/plots_offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined,
so `dvc plots show` / `dvc plots diff` draw their charts with no network (a lab room, CI).

The scripts come from the npm registry at the pinned versions below (`npm pack`, no install);
run `python tools/build_plots_template.py` to rebuild after changing a version. DVC's page
template needs only `{plot_divs}`; leaving out `{scripts}` keeps DVC's CDN <script> tags out.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# the majors DVC's vega-lite specs are written for (dvc-render loads vega@5, vega-lite@5, vega-embed@6)
PINNED = {"vega": ("5.33.1", "build/vega.min.js"),
          "vega-lite": ("5.23.0", "build/vega-lite.min.js"),
          "vega-embed": ("6.29.0", "build/vega-embed.min.js")}
OUT = Path(__file__).resolve().parents[1] / "templates" / "plots_offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>cifar-cnn-lab · DVC plots (offline)</title>
    <!-- inlined from the npm registry: {versions} -->
{scripts}
    <style>
        body {{ font-family: system-ui, sans-serif; margin: 16px; }}
        table {{ border-spacing: 15px; }}
        img {{ max-width: 100%; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(name: str, version: str, member: str, workdir: Path) -> str:
    tgz = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tarfile.open(workdir / tgz) as tar:
        js = tar.extractfile(f"package/{member}").read().decode()
    if "</script" in js.lower():
        js = js.replace("</script", "<\\/script")  # cannot end the inline <script> early
    return js


def main() -> int:
    parts, versions = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, member) in PINNED.items():
            js = fetch(name, version, member, Path(tmp))
            sha = hashlib.sha256(js.encode()).hexdigest()[:12]
            versions.append(f"{name}@{version} ({member}, sha256 {sha})")
            parts.append(f'    <script type="text/javascript">/* {name}@{version} */\n{js}\n    </script>')
    OUT.write_text(PAGE.format(versions="; ".join(versions), scripts="\n".join(parts)))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {', '.join(versions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
