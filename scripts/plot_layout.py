"""Draw the pictures of docs/POSITION_ENCODING.md from the real layout and mask code.

* ``layout_example.png``: the worked example (no main, left alignment, stride 128, A=[a0,a1,a2],
  B=[b0,b1], C=[c0..c3]) as a grid (x = time, y = branch) with each token's flat index and 2D
  position, and below it the flat (time-major) sequence the model actually reads.
* ``masks.png``: the columnar and isolated masks of a small example with a main and 3 branches,
  side by side (row = query, column = key).

Usage (from the repo root; matplotlib, Agg backend, no display needed):

    python scripts/plot_layout.py                    # writes docs/images/layout_example.png, masks.png
    python -m scripts.plot_layout --out_dir /tmp/img
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_output_args
from trainer.cli import ArgParser, cli_main, make_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
# one colour per branch id: main (0), then branches 1..3
BRANCH_COLOURS = ["#9e9e9e", "#4c72b0", "#dd8452", "#55a868", "#c44e52"]


def _names(layout, letters: dict[int, str]) -> list[str]:
    """Token names such as a0, b1, m0 from the branch ids of sample 0 (names in branch-local order)."""
    seen: dict[int, int] = {}
    out = []
    for b in layout.branch_ids[0].tolist():
        k = seen.get(b, 0)
        seen[b] = k + 1
        out.append(f"{letters[b]}{k}")
    return out


def _pyplot():
    """matplotlib (Agg backend) is imported when a picture is drawn, after the flags are checked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layout_example(path: Path) -> None:
    from matplotlib.patches import Rectangle

    from parallel.columnar import build_flat_linear_layout

    plt = _pyplot()
    samples = [{"branches": [[10, 11, 12], [20, 21], [30, 31, 32, 33]]}]
    lay = build_flat_linear_layout(None, samples, branch_stride=128, align_to="left")
    names = _names(lay, {1: "a", 2: "b", 3: "c"})
    times, bids, pos2d = lay.time_ids[0].tolist(), lay.branch_ids[0].tolist(), lay.pos2d[0].tolist()
    n_time, n_branch, T = max(times) + 1, max(bids), len(names)

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.2, 5.0), gridspec_kw={"height_ratios": [3.2, 1.0]})
    for t in range(n_time):
        for b in range(1, n_branch + 1):
            ax.add_patch(Rectangle((t, b - 1), 1, 1, facecolor="#f4f4f4", edgecolor="#cccccc"))
    for i, (name, t, b, p) in enumerate(zip(names, times, bids, pos2d)):
        ax.add_patch(Rectangle((t, b - 1), 1, 1, facecolor=BRANCH_COLOURS[b], alpha=0.35, edgecolor="black"))
        ax.text(t + 0.5, b - 1 + 0.62, name, ha="center", va="center", fontsize=15, fontweight="bold")
        ax.text(t + 0.5, b - 1 + 0.28, f"flat {i}   ({p[0]},{p[1]})", ha="center", va="center", fontsize=8.5)
    ax.set_xlim(0, n_time)
    ax.set_ylim(n_branch, 0)
    ax.set_xticks([t + 0.5 for t in range(n_time)], [f"t={t}" for t in range(n_time)])
    ax.set_yticks([b - 0.5 for b in range(1, n_branch + 1)],
                  [f"{'ABC'[b - 1]}  (id {b}, coord {(b - 1) * 128})" for b in range(1, n_branch + 1)])
    ax.set_xlabel("time (second coordinate of pos2d)")
    ax.set_title("Worked example: no main, left alignment, branch_stride 128\n"
                 "cell: token, flat index, pos2d = (branch coordinate, time)", fontsize=10)
    ax.tick_params(length=0)

    for i, (name, b) in enumerate(zip(names, bids)):
        ax2.add_patch(Rectangle((i, 0), 1, 1, facecolor=BRANCH_COLOURS[b], alpha=0.35, edgecolor="black"))
        ax2.text(i + 0.5, 0.5, name, ha="center", va="center", fontsize=12, fontweight="bold")
    ax2.set_xlim(0, T)
    ax2.set_ylim(1, 0)
    ax2.set_xticks([i + 0.5 for i in range(T)], [str(i) for i in range(T)])
    ax2.set_yticks([])
    ax2.set_xlabel("flat index: the one sequence the model reads\n(time-major order: by time, then by branch id)")
    ax2.tick_params(length=0)
    for spine in (*ax.spines.values(), *ax2.spines.values()):
        spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_masks(path: Path) -> None:
    from matplotlib.colors import ListedColormap

    from parallel.columnar import build_attention_mask, build_flat_linear_layout

    plt = _pyplot()
    samples = [{"main": [1, 2], "branches": [[10, 11, 12], [20, 21], [30, 31, 32]]}]
    lay = build_flat_linear_layout(None, samples, branch_stride=128, align_to="left")
    names = _names(lay, {0: "m", 1: "a", 2: "b", 3: "c"})
    times, bids = lay.time_ids[0].tolist(), lay.branch_ids[0].tolist()
    labels = [f"{n} t{t}" for n, t in zip(names, times)]
    T = len(names)
    cmap = ListedColormap(["#ffffff", "#4c72b0", "#a6c1e6"])  # blocked, visible, self-edge

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 6.0))
    rules = {"columnar": "key time < query time (any branch, main included),\nor the key is the query itself",
             "isolated": "key time < query time and key in the main or in\nthe query's branch, or the key is the query itself"}
    for ax, mode in zip(axes, ("columnar", "isolated")):
        m = build_attention_mask(lay.time_ids, lay.branch_ids, mode)[0, 0].int()
        m.fill_diagonal_(2)
        ax.imshow(m.numpy(), cmap=cmap, vmin=0, vmax=2)
        ax.set_xticks(range(T), labels, rotation=90, fontsize=9)
        ax.set_yticks(range(T), labels, fontsize=9)
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            for tick, b in zip(ticks, bids):
                tick.set_color(BRANCH_COLOURS[b] if b else "black")
        ax.set_xticks([x - 0.5 for x in range(T + 1)], minor=True)
        ax.set_yticks([y - 0.5 for y in range(T + 1)], minor=True)
        ax.grid(which="minor", color="#bbbbbb", linewidth=0.6)
        ax.tick_params(which="both", length=0)
        ax.set_xlabel("key (flat order)")
        ax.set_ylabel("query (flat order)")
        ax.set_title(f"mask_mode = \"{mode}\"\n{rules[mode]}", fontsize=9.5)
    fig.suptitle("main m0 m1 + branches A (a0..a2), B (b0, b1), C (c0..c2), left alignment\n"
                 "dark = may attend, light = self-edge, white = masked; labels: token and time", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "plot_layout")
    add_output_args(p, out_dir=str(REPO_ROOT / "docs" / "images"), out_dir_help="folder for the PNG files")
    return p


@cli_main(build_parser)
def main(args) -> int:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_layout_example(out / "layout_example.png")
    plot_masks(out / "masks.png")
    for name in ("layout_example.png", "masks.png"):
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
