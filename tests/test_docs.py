"""The recipes of docs/INTERFACES.md run as written (so the documentation cannot rot)."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "INTERFACES.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def recipes() -> list[str]:
    text = DOC.read_text()
    return re.findall(r"```python\n(.*?)```", text[text.index("\n## Recipes"):], re.S)


def test_there_are_three_recipes():
    assert len(recipes()) == 3


@pytest.fixture(scope="module")
def tiny_ssdnerf(tmp_path_factory):
    from neural3d.methods.ssdnerf.config import tiny_config
    from neural3d.methods.ssdnerf.train import train

    root = tmp_path_factory.mktemp("ssd")
    train(tiny_config(root / "data", root / "run", steps=2))
    return root / "run" / "checkpoints" / "last.pt"


@pytest.mark.parametrize("index", [0, 1, 2])
def test_recipe_runs(index, tiny_ssdnerf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = recipes()[index]
    exec(compile(code, f"{DOC}:recipe{index + 1}", "exec"), {"CKPT": str(tiny_ssdnerf)})


def test_make_figures_plots_a_benchmark_json(tmp_path):
    """docs/make_figures.py --only bench with given JSON: the plot (PIL or matplotlib) and its
    provenance; an unknown figure name is refused."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("make_figures", DOC.parent / "make_figures.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    rows = [{"backend": backend, "layout": layout, "shape": f"{rays}x128x3",
             "speedup_fwd_bwd_vs_torch": speedup}
            for rays, cpp in ((256, 3.0), (4096, 6.0)) for layout in ("padded", "packed")
            for backend, speedup in (("torch", 1.0), ("cpp (avx2)", cpp))]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {"device": "cpu", "threads": 1}, "rows": rows}))
    assert mf.main(["--out", str(tmp_path / "figs"), "--only", "bench", "--bench-json",
                    str(bench)]) == 0
    from PIL import Image

    png = tmp_path / "figs" / "composite_speedup.png"
    assert Image.open(png).size[0] >= 600 and png.stat().st_size < 300_000
    prov = json.loads((tmp_path / "figs" / "figures.json").read_text())
    assert prov["bench"]["series"] == {"cpp, padded": [[32768, 3.0], [524288, 6.0]],
                                       "cpp, packed": [[32768, 3.0], [524288, 6.0]]}
    with pytest.raises(SystemExit):
        mf.main(["--only", "pictures"])
