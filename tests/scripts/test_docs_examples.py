"""Every Python block of docs/POSITION_ENCODING.md runs (its asserts check the worked examples), and the
pictures it embeds exist and are drawn by scripts/visualize_layout.py."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "POSITION_ENCODING.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[int, str]]:
    text = DOC.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


BLOCKS = _blocks()


def test_doc_has_examples():
    assert len(BLOCKS) >= 8
    code = "\n".join(src for _, src in BLOCKS)
    # the worked example's numbers are checked by an assert inside the doc itself
    assert "[[[0, 0], [128, 0], [256, 0], [0, 1], [128, 1], [256, 1], [0, 2], [256, 2], [256, 3]]]" in code
    assert "[[a0, b0, c0, a1, b1, c1, a2, c2, c3]]" in code


@pytest.mark.parametrize("line,src", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_doc_block_runs(line, src):
    namespace = {"__name__": f"docs_example_line{line}"}
    exec(compile(src, f"{DOC}:{line}", "exec"), namespace)  # noqa: S102 - our own documentation


def test_doc_images_exist_and_are_embedded():
    text = DOC.read_text()
    for name in ("layout_example.png", "mask_columnar.png", "mask_isolated.png"):
        assert f"(images/{name})" in text
        path = ROOT / "docs" / "images" / name
        assert path.exists() and 0 < path.stat().st_size < 150_000


def test_visualize_layout_script(tmp_path):
    pytest.importorskip("matplotlib")
    from scripts.visualize_layout import main

    assert main(["--out_dir", str(tmp_path)]) == 0
    for name in ("layout_example.png", "mask_columnar.png", "mask_isolated.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000
