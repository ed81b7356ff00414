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
