"""Figures of a run's gradient diagnostics, read back from its TensorBoard train writer.

    python -m sweeps.gradient_figures <run dir> [--out DIR]

Writes terms.png (each loss term's share of the gradient and the terms' cosine),
layers.png (gradient norm per layer group, log scale) and updates.png (update-to-weight
ratio per group) into DIR (default: the run dir). docs/guide/gradients.md shows them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.loop.loggers import read_scalars


def plot(
    tags: dict, prefixes: list[str], title: str, ylabel: str, path: Path, log: bool = False, zero_line: bool = False
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(prefixes), figsize=(5 * len(prefixes), 3.2), dpi=90, squeeze=False)
    for ax, prefix in zip(axes[0], prefixes):
        for tag in sorted(t for t in tags if t.startswith(prefix)):
            steps, values = zip(*tags[tag])
            ax.plot(steps, values, label=tag[len(prefix) :], lw=1.2)
        if log:
            ax.set_yscale("log")
        if zero_line:
            ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(prefix.rstrip("/"), fontsize=9, loc="left")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel if ax is axes[0][0] else "")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweeps.gradient_figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    tags = read_scalars(args.run_dir / "tb" / "train")
    plot(
        tags,
        ["grad_terms/share/", "grad_terms/cosine/"],
        "Loss terms: share of the gradient, agreement",
        "share / cosine",
        out / "terms.png",
        zero_line=True,
    )
    plot(
        tags,
        ["grad_terms/norm/", "grad_layers/"],
        "Gradient norms: per weighted term, per layer group",
        "L2 norm",
        out / "layers.png",
        log=True,
    )
    plot(
        tags,
        ["update_ratio/", "weight_norm/"],
        "Updates: |dW| / |W| per step, and |W|",
        "ratio / norm",
        out / "updates.png",
        log=True,
    )
    print(f"written: {out / 'terms.png'}, {out / 'layers.png'}, {out / 'updates.png'}")


if __name__ == "__main__":
    main()
