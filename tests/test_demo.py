"""`neural3d demo` runs end to end (shortened: few steps, small images)."""

import json

import pytest

from neural3d.cli import main


@pytest.mark.slow
def test_demo_smoke(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "20", "--res", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "metrics.json" in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["steps"] == 20 and m["psnr"] is not None
    assert (tmp_path / "renders.png").is_file()
