"""Pictures of a sample's 2D layout and of its attention masks, drawn from the real layout and mask code.

* ``layout.png``: the branch x time grid (row = main / branch, column = time); each cell shows the token,
  its flat index and its pos2d = (branch coordinate, time); below it the flat (time-major) sequence the
  model reads (for samples of up to 64 tokens).
* ``mask_columnar.png``, ``mask_isolated.png``: who may attend to whom (row = query, column = key, flat
  order); dark = visible, light = the query itself, white = masked.

Without a sample it draws the pictures of docs/POSITION_ENCODING.md into docs/images (the worked example
``layout_example.png`` and, for a main with three branches, ``mask_columnar.png`` / ``mask_isolated.png``).

Usage (from the repo root; matplotlib with the Agg backend, no display needed):

    python scripts/visualize_layout.py                       # the docs pictures, into docs/images
    python scripts/visualize_layout.py --main "Mira has 3 apples." --prompts "How many?" "Who has them?" \\
        --out_dir out/layout
    python scripts/visualize_layout.py --prompts_file dataset/eval_prompts_demo.jsonl --sample_index 2 \\
        --align_to right --chat_template --out_dir out/layout
    python -m scripts.visualize_layout --prompts "a b c" "d e" --mask isolated --out_dir out/layout

Text is tokenised with --tokenizer (default: the repo's model/). `draw_layout` / `draw_mask` return the
picture's geometry (cell origins in pixels), which the tests use to read every cell back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_IMAGES = REPO_ROOT / "docs" / "images"
DPI = 100
# cell fill per branch id (main 0, then branches 1, 2, ...; cycled), empty grid cells, mask states
BRANCH_FILLS = ["#d0d0d0", "#b7c7e0", "#f1c9a9", "#bcdcc4", "#e7b5b6", "#d5c8e6", "#dccab9", "#f3c6e3",
                "#c9c9a0", "#aee3ea"]
BRANCH_INK = ["#555555", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
              "#8c8c00", "#1fa5b8"]
EMPTY_FILL = "#f7f7f7"
MASK_FILLS = {"blocked": "#ffffff", "visible": "#4c72b0", "self": "#a6c1e6"}
MAX_GRID_TIME = 96  # columns of the layout grid that still read as a picture
MAX_MASK_TOKENS = 384
MAX_STRIP_TOKENS = 64
MIN_WIDTH = 660  # room for the titles


def fill(branch_id: int) -> str:
    return BRANCH_FILLS[branch_id % len(BRANCH_FILLS)]


def ink(branch_id: int) -> str:
    return BRANCH_INK[branch_id % len(BRANCH_INK)]


@dataclass
class Grid:
    """Where a picture's cells are, in pixels of the PNG (origin top left): cell (r, c) spans
    x0 + c * cell_w .. x0 + (c + 1) * cell_w and y0 + r * cell_h .. y0 + (r + 1) * cell_h."""

    x0: float
    y0: float
    cell_w: float
    cell_h: float
    rows: int
    cols: int


@dataclass
class Picture:
    path: Path
    size: tuple[int, int]  # (width, height) in pixels
    grids: dict[str, Grid]


def _pyplot():
    """matplotlib (Agg backend) is imported when a picture is drawn, after the flags are checked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(fig, x0: float, y0: float, w: float, h: float, width: int, height: int):
    """Axes at pixel box (x0, y0 from the top left; w x h) of a width x height figure."""
    return fig.add_axes((x0 / width, 1 - (y0 + h) / height, w / width, h / height))


def _bare(ax) -> None:
    ax.tick_params(which="both", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def sample_tokens(layout) -> dict:
    """Sample 0 of a `BatchLayout` as plain lists of its real tokens (flat order)."""
    n = int(layout.token_mask[0].sum())
    return {"ids": layout.input_ids[0, :n].tolist(), "times": layout.time_ids[0, :n].tolist(),
            "bids": layout.branch_ids[0, :n].tolist(), "pos2d": layout.pos2d[0, :n].tolist()}


def draw_layout(layout, labels: list[str], path: Path, title: str, row_names: dict[int, str] | None = None) -> Picture:
    """The branch x time grid of sample 0 (+ the flat strip when short) -> PNG at `path`."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    s = sample_tokens(layout)
    T, bids = len(s["ids"]), sorted(set(s["bids"]))
    n_time, n_rows = max(s["times"]) + 1, len(bids)
    row_of = {b: r for r, b in enumerate(bids)}
    cw, ch, left, top, right = 74, 46, 190, 70, 20
    strip = T <= MAX_STRIP_TOKENS
    sw = 40 if strip else 0
    grid_h = n_rows * ch
    width = int(max(MIN_WIDTH, left + max(n_time * cw, T * sw) + right))
    height = int(top + grid_h + 40 + (110 if strip else 0))
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = _axes(fig, left, top, n_time * cw, grid_h, width, height)
    for r in range(n_rows):
        for t in range(n_time):
            ax.add_patch(Rectangle((t, r), 1, 1, facecolor=EMPTY_FILL, edgecolor="#cccccc", linewidth=0.8))
    fs = 11 if cw >= 70 else 8
    for i, (lab, t, b, p) in enumerate(zip(labels, s["times"], s["bids"], s["pos2d"])):
        r = row_of[b]
        ax.add_patch(Rectangle((t, r), 1, 1, facecolor=fill(b), edgecolor="#333333", linewidth=0.8))
        ax.text(t + 0.5, r + 0.4, lab, ha="center", va="center", fontsize=fs, fontweight="bold", clip_on=True)
        ax.text(t + 0.5, r + 0.78, f"#{i} ({p[0]},{p[1]})", ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_xlim(0, n_time)
    ax.set_ylim(n_rows, 0)
    ax.set_xticks([t + 0.5 for t in range(n_time)], [f"t={t}" for t in range(n_time)], fontsize=8)
    names = row_names or {}
    coords = {b: p[0] for b, p in zip(s["bids"], s["pos2d"])}
    ax.set_yticks([r + 0.5 for r in range(n_rows)],
                  [f"{names.get(b, 'main' if b == 0 else f'branch {b}')}  (id {b}, coord {coords[b]})" for b in bids],
                  fontsize=9)
    for tick, b in zip(ax.get_yticklabels(), bids):
        tick.set_color(ink(b))
    _bare(ax)
    fig.text(0.5, 1 - 10 / height, title + "\ncell: token, #flat index (branch coordinate, time)", ha="center",
             va="top", fontsize=10)
    grids = {"grid": Grid(left, top, cw, ch, n_rows, n_time)}
    if strip:
        sy = top + grid_h + 60
        ax2 = _axes(fig, left, sy, T * sw, 34, width, height)
        for i, (lab, b) in enumerate(zip(labels, s["bids"])):
            ax2.add_patch(Rectangle((i, 0), 1, 1, facecolor=fill(b), edgecolor="#333333", linewidth=0.8))
            ax2.text(i + 0.5, 0.5, lab[:4], ha="center", va="center", fontsize=7, clip_on=True)
        ax2.set_xlim(0, T)
        ax2.set_ylim(1, 0)
        ax2.set_xticks([i + 0.5 for i in range(T)], [str(i) for i in range(T)], fontsize=7)
        ax2.set_yticks([])
        ax2.set_xlabel("flat index: the sequence the model reads (by time, then branch id)", fontsize=9)
        _bare(ax2)
        grids["strip"] = Grid(left, sy, sw, 34, 1, T)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Picture(path, (width, height), grids)


MASK_RULES = {"columnar": "key time < query time (any branch, main included), or the query itself",
              "isolated": "key time < query time and key in the main or the query's branch, or the query itself"}


def mask_states(layout, mode: str):
    """`[T, T]` int: 0 masked, 1 visible, 2 the query itself (sample 0, real tokens)."""
    from parallel.masks import build_attention_mask

    n = int(layout.token_mask[0].sum())
    m = build_attention_mask(layout.time_ids[:, :n], layout.branch_ids[:, :n], mode)[0, 0].int()
    m.fill_diagonal_(2)
    return m


def draw_mask(layout, labels: list[str], mode: str, path: Path, title: str) -> Picture:
    """The `mode` attention mask of sample 0 (row = query, column = key) -> PNG at `path`."""
    from matplotlib.colors import ListedColormap

    plt = _pyplot()
    s = sample_tokens(layout)
    T = len(s["ids"])
    cell = max(4, min(26, 640 // T))
    show_labels = cell >= 12
    left = bottom = 110 if show_labels else 30
    top = 80
    width, height = int(max(MIN_WIDTH, left + T * cell + 20)), int(top + T * cell + bottom)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = _axes(fig, left, top, T * cell, T * cell, width, height)
    cmap = ListedColormap([MASK_FILLS["blocked"], MASK_FILLS["visible"], MASK_FILLS["self"]])
    ax.imshow(mask_states(layout, mode).numpy(), cmap=cmap, vmin=0, vmax=2, interpolation="nearest",
              aspect="auto", extent=(0, T, T, 0))
    if show_labels:
        ticks = [f"{lab} t{t}" for lab, t in zip(labels, s["times"])]
        ax.set_xticks([i + 0.5 for i in range(T)], ticks, rotation=90, fontsize=8)
        ax.set_yticks([i + 0.5 for i in range(T)], ticks, fontsize=8)
        for axis_ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            for tick, b in zip(axis_ticks, s["bids"]):
                tick.set_color(ink(b))
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if cell >= 8:
        ax.set_xticks(range(T + 1), minor=True)
        ax.set_yticks(range(T + 1), minor=True)
        ax.grid(which="minor", color="#bbbbbb", linewidth=0.5)
    _bare(ax)
    fig.text(0.5, 1 - 8 / height, f"{title}\nmask_mode = \"{mode}\": {MASK_RULES[mode]}\n"
             "rows: queries, columns: keys (flat order); dark = visible, light = itself, white = masked",
             ha="center", va="top", fontsize=8)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Picture(path, (width, height), {"mask": Grid(left, top, cell, cell, T, T)})


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """One short, printable label per token id (a leading space shows as '·', a newline as '\\n')."""
    out = []
    for i in ids:
        text = tokenizer.decode([i]).replace("\n", "\\n").replace("\t", "\\t")
        text = ("·" + text[1:]) if text.startswith(" ") else text
        out.append(text[:8] if text.strip() else repr(text)[1:-1] or "∅")
    return out


def names_by_branch(bids: list[int], letters: dict[int, str]) -> list[str]:
    """Token names such as a0, b1, m0 (letter of the branch, index within it)."""
    seen: dict[int, int] = {}
    out = []
    for b in bids:
        out.append(f"{letters[b]}{seen.get(b, 0)}")
        seen[b] = seen.get(b, 0) + 1
    return out


def draw_docs_pictures(out_dir: Path) -> list[Picture]:
    """The pictures of docs/POSITION_ENCODING.md: the worked example and the masks of a main + 3 branches."""
    from parallel.layout import build_flat_linear_layout

    out_dir.mkdir(parents=True, exist_ok=True)
    example = build_flat_linear_layout(None, [{"branches": [[10, 11, 12], [20, 21], [30, 31, 32, 33]]}],
                                       branch_stride=128, align_to="left")
    letters = {1: "a", 2: "b", 3: "c"}
    pics = [draw_layout(example, names_by_branch(sample_tokens(example)["bids"], letters),
                        out_dir / "layout_example.png", "Worked example: no main, left alignment, branch_stride 128",
                        {1: "A", 2: "B", 3: "C"})]
    with_main = build_flat_linear_layout(None, [{"main": [1, 2], "branches": [[10, 11, 12], [20, 21], [30, 31, 32]]}],
                                         branch_stride=128, align_to="left")
    names = names_by_branch(sample_tokens(with_main)["bids"], {0: "m", **letters})
    for mode in ("columnar", "isolated"):
        pics.append(draw_mask(with_main, names, mode, out_dir / f"mask_{mode}.png",
                              "main m0 m1 + branches A (a0..a2), B (b0, b1), C (c0..c2), left alignment"))
    return pics


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "visualize_layout")
    g = p.add_argument_group("the sample (none: the docs pictures)")
    g.add_argument("--main", default=None, help="the shared context (branch id 0)")
    flags.add_prompts_arg(g, help="the branches of the sample, one argument each")
    g.add_argument("--sample_index", type=flags.nonneg_int, default=None,
                   help="with --prompts_file: which sample of the file (0-based; default 0)")
    flags.add_chat_template_arg(g, default=False, help="render each branch as a user turn of the chat template "
                                                       "(a main becomes the system turn)")
    flags.add_default_system_arg(g)
    flags.add_source_args(p, hf=False, text_column=False, max_samples=False, data_aliases=("--prompts_file",),
                          data_flag="--prompts_file", data_help="a prompts file (the formats of parallel_generate)")
    flags.add_model_source_args(p, checkpoint=False, hf=False, lora=False)
    flags.add_mask_args(p, default=None)
    lay = p.add_argument_group("layout")
    flags.add_branch_stride_arg(lay, default=128)
    flags.add_output_args(p, out_dir="", out_dir_help="folder for the PNG files (default: docs/images for the "
                                                        "docs pictures, out/layout for a sample)")
    p.add_check(_check_sample)
    return p


def _check_sample(args) -> None:
    has_sample = bool(args.prompts) or args.data_path is not None
    if args.main is not None and not args.prompts:
        raise UsageError("--main needs the branches: --prompts TEXT ...")
    if args.prompts and args.data_path is not None:
        raise UsageError("give the sample with --prompts (and --main) or with --prompts_file, not both")
    if args.sample_index is not None and args.data_path is None:
        raise UsageError("--sample_index picks a sample of --prompts_file; give --prompts_file")
    flags.check_default_system(args, args.chat_template)
    if not has_sample:
        for flag, given in (("--chat_template", args.chat_template), ("--tokenizer", args.tokenizer is not None),
                            ("--align_to", args.align_to != "left"), ("--branch_stride", args.branch_stride != 128),
                            ("--mask", args.mask_mode is not None)):
            if given:
                raise UsageError(f"{flag} applies to a sample; give --prompts or --prompts_file (without one the "
                                 "fixed docs pictures are drawn)")
    if not args.out_dir:  # checked for writability by the output group, after this check
        args.out_dir = str(REPO_ROOT / "out" / "layout") if has_sample else str(DOCS_IMAGES)


def load_sample(args, tokenizer) -> dict:
    """The sample to draw, rendered (chat template when asked) -> {"main", "branches"}."""
    from parallel_data.prompts import PromptSample, collect_samples, render_sample

    if args.prompts:
        sample = PromptSample(list(args.prompts), args.main or "", "--prompts")
    else:
        samples = collect_samples(None, args.data_path, branches_per_sample=1, split_bars=True)
        index = args.sample_index or 0
        if index >= len(samples):
            raise ValueError(f"--sample_index {index}: {args.data_path} has {len(samples)} sample(s)")
        sample = samples[index]
    return render_sample(sample, tokenizer, args.chat_template, args.default_system)


def draw_sample(args) -> list[Picture]:
    from model.tokenizer import load_tokenizer
    from parallel.layout import build_flat_linear_layout

    tok = load_tokenizer(args.tokenizer)
    sample = load_sample(args, tok)
    if not sample.get("main"):
        sample.pop("main", None)  # no main: the branches take slots 0..n-1
    layout = build_flat_linear_layout(tok, [sample], branch_stride=args.branch_stride, align_to=args.align_to)
    s = sample_tokens(layout)
    n_time, T = max(s["times"]) + 1, len(s["ids"])
    if n_time > MAX_GRID_TIME or T > MAX_MASK_TOKENS:
        raise ValueError(f"the sample has {T} tokens over {n_time} time steps; the pictures stay readable up to "
                         f"{MAX_MASK_TOKENS} tokens and {MAX_GRID_TIME} time steps (give a shorter sample)")
    labels = token_labels(tok, s["ids"])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    where = f"{len(sample['branches'])} branch(es){' + main' if 'main' in sample else ''}, align_to={args.align_to}, " \
            f"branch_stride={args.branch_stride}"
    pics = [draw_layout(layout, labels, out / "layout.png", f"{T} tokens: {where}")]
    modes = [args.mask_mode] if args.mask_mode else ["columnar", "isolated"]
    pics += [draw_mask(layout, labels, mode, out / f"mask_{mode}.png", f"{T} tokens: {where}") for mode in modes]
    return pics


@cli_main(build_parser)
def main(args) -> int:
    pics = draw_sample(args) if (args.prompts or args.data_path) else draw_docs_pictures(Path(args.out_dir))
    for pic in pics:
        print(f"wrote {pic.path} ({pic.size[0]}x{pic.size[1]} px, {pic.path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
