"""scripts/visualize_layout.py: the PNGs have the size they report, and every cell of every picture, read
back from the PNG, shows what the layout and the brute-force mask rule say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oracles import brute_mask

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402 - pillow comes with matplotlib

from scripts import visualize_layout as viz  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def pixel(img, grid, r: int, c: int, where: str = "centre") -> tuple[int, int, int]:
    """The colour inside cell (r, c): its centre (masks) or near its top-left corner (under the text)."""
    fx, fy = (0.5, 0.5) if where == "centre" else (0.12, 0.12)
    return img.getpixel((int(grid.x0 + (c + fx) * grid.cell_w), int(grid.y0 + (r + fy) * grid.cell_h)))[:3]


def close(a, b, tol: int = 6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def check_picture(pic) -> Image.Image:
    img = Image.open(pic.path)
    assert img.format == "PNG" and img.size == pic.size
    assert len(set(img.convert("RGB").getdata())) > 8  # not a flat picture
    return img.convert("RGB")


def check_layout_cells(pic, layout) -> None:
    img, grid = check_picture(pic), pic.grids["grid"]
    s = viz.sample_tokens(layout)
    rows = sorted(set(s["bids"]))
    occupied = {(rows.index(b), t): b for b, t in zip(s["bids"], s["times"])}
    assert (grid.rows, grid.cols) == (len(rows), max(s["times"]) + 1)
    seen = set()
    for r in range(grid.rows):
        for c in range(grid.cols):
            want = viz.fill(occupied[r, c]) if (r, c) in occupied else viz.EMPTY_FILL
            got = pixel(img, grid, r, c, "corner")
            assert close(got, rgb(want)), (r, c, got, want)
            seen.add(want)
    # one colour per branch present, plus the empty cells when the grid has any
    assert len(seen) == len(rows) + (len(occupied) < grid.rows * grid.cols)
    if "strip" in pic.grids:
        strip = pic.grids["strip"]
        assert strip.cols == len(s["ids"])
        for i, b in enumerate(s["bids"]):
            assert close(pixel(img, strip, 0, i, "corner"), rgb(viz.fill(b))), i


def check_mask_cells(pic, layout, mode: str) -> None:
    img, grid = check_picture(pic), pic.grids["mask"]
    s = viz.sample_tokens(layout)
    want = brute_mask(s["times"], s["bids"], mode)
    assert grid.rows == grid.cols == len(s["ids"])
    colours = {k: rgb(v) for k, v in viz.MASK_FILLS.items()}
    for q in range(grid.rows):
        for k in range(grid.cols):
            state = "self" if q == k else "visible" if want[q][k] else "blocked"
            assert close(pixel(img, grid, q, k), colours[state]), (mode, q, k, state)


def test_docs_pictures_show_the_code_layout_and_masks(tmp_path):
    from parallel.layout import build_flat_linear_layout

    assert viz.main(["--out_dir", str(tmp_path)]) == 0
    pics = viz.draw_docs_pictures(tmp_path)
    assert [p.path.name for p in pics] == ["layout_example.png", "mask_columnar.png", "mask_isolated.png"]
    example = build_flat_linear_layout(None, [{"branches": [[10, 11, 12], [20, 21], [30, 31, 32, 33]]}])
    check_layout_cells(pics[0], example)
    assert pics[0].grids["grid"].rows == 3 and pics[0].grids["grid"].cols == 4  # 9 tokens, 3 empty cells
    with_main = build_flat_linear_layout(None, [{"main": [1, 2], "branches": [[10, 11, 12], [20, 21], [30, 31, 32]]}])
    for pic, mode in zip(pics[1:], ("columnar", "isolated")):
        check_mask_cells(pic, with_main, mode)
    assert Image.open(pics[1].path).tobytes() != Image.open(pics[2].path).tobytes()


def test_the_committed_docs_pictures_are_the_scripts(tmp_path):
    """docs/images holds what the script draws now (same size; redraw with `python scripts/visualize_layout.py`)."""
    for pic in viz.draw_docs_pictures(tmp_path):
        committed = ROOT / "docs" / "images" / pic.path.name
        assert committed.is_file() and Image.open(committed).size == pic.size, committed
    text = (ROOT / "docs" / "POSITION_ENCODING.md").read_text()
    for name in ("layout_example.png", "mask_columnar.png", "mask_isolated.png"):
        assert f"(images/{name})" in text


def _sample_layout(tok, sample, stride=128, align="left"):
    from parallel.layout import build_flat_linear_layout

    return build_flat_linear_layout(tok, [sample], branch_stride=stride, align_to=align)


def test_a_text_sample_with_a_main_right_aligned(tmp_path, tiny_tokenizer_dir, tiny_tokenizer):
    argv = ["--main", "the fox", "--prompts", "a bird sings", "two", "--align_to", "right", "--branch_stride", "64",
            "--tokenizer", str(tiny_tokenizer_dir), "--out_dir", str(tmp_path)]
    args = viz.build_parser().parse_args(argv)
    pics = viz.draw_sample(args)
    assert [p.path.name for p in pics] == ["layout.png", "mask_columnar.png", "mask_isolated.png"]
    layout = _sample_layout(tiny_tokenizer, {"main": "the fox", "branches": ["a bird sings", "two"]}, 64, "right")
    check_layout_cells(pics[0], layout)
    coords = sorted({p[0] for p in viz.sample_tokens(layout)["pos2d"]})
    assert coords == [0, 64, 128]
    for pic, mode in zip(pics[1:], ("columnar", "isolated")):
        check_mask_cells(pic, layout, mode)


def test_a_prompts_file_sample_with_the_chat_template_and_one_mask(tmp_path, tiny_tokenizer_dir, tiny_tokenizer):
    from parallel_data.prompts import PromptSample, render_sample

    pf = tmp_path / "p.jsonl"
    pf.write_text(json.dumps({"branches": ["x"]}) + "\n" + json.dumps({"main": "ctx", "branches": ["q1", "q2"]}) + "\n")
    out = tmp_path / "pics"
    assert viz.main(["--prompts_file", str(pf), "--sample_index", "1", "--chat_template", "--mask", "isolated",
                     "--tokenizer", str(tiny_tokenizer_dir), "--out_dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["layout.png", "mask_isolated.png"]
    rendered = render_sample(PromptSample(["q1", "q2"], "ctx"), tiny_tokenizer, True)
    layout = _sample_layout(tiny_tokenizer, rendered)
    args = viz.build_parser().parse_args(["--prompts_file", str(pf), "--sample_index", "1", "--chat_template",
                                          "--mask", "isolated", "--tokenizer", str(tiny_tokenizer_dir),
                                          "--out_dir", str(out)])
    pics = viz.draw_sample(args)
    check_layout_cells(pics[0], layout)
    check_mask_cells(pics[1], layout, "isolated")


@pytest.mark.parametrize("argv,expect", [
    (["--main", "ctx"], "--main needs the branches"),
    (["--sample_index", "1"], "--sample_index picks a sample of --prompts_file"),
    (["--mask", "isolated"], "--mask applies to a sample"),
    (["--prompts", "a", "--default_system"], "--default_system only applies with the chat template"),
])
def test_bad_flags_are_one_line(argv, expect, tmp_path, capsys):
    assert viz.main([*argv, "--out_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_sample_index_past_the_file_and_a_huge_sample_are_refused(tmp_path, capsys):
    pf = tmp_path / "p.jsonl"
    pf.write_text(json.dumps({"branches": ["x"]}) + "\n")
    assert viz.main(["--prompts_file", str(pf), "--sample_index", "3", "--out_dir", str(tmp_path / "o")]) == 2
    assert f"--sample_index 3: {pf} has 1 sample(s)" in capsys.readouterr().err
    assert viz.main(["--prompts", "word " * 200, "--out_dir", str(tmp_path / "o")]) == 2
    assert "pictures stay readable up to" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing is written for a refused sample
