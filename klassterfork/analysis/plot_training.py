"""Loss / accuracy / learning-rate curves from a run's CSV log.

Reads the CSV written by the training loop (Keras `CSVLogger` style: a header
row, one row per epoch). Columns are found by name and may be missing; each
curve is looked up under its first present alias:

    loss:  loss, val_loss
    top-1: top1 | accuracy | sparse_categorical_accuracy | top1_accuracy
           (and the same with a `val_` prefix)
    top-5: top5 | top5_accuracy | sparse_top_k_categorical_accuracy
    LR:    lr | learning_rate

The x axis is `epoch` when present, else the row number. Empty cells and
non-numbers become NaN (gaps in the curve).
"""

import csv
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from klassterfork.files import atomic_write, open_file  # noqa: E402

ALIASES = {
    "top1": ("top1", "accuracy", "sparse_categorical_accuracy",
             "top1_accuracy", "categorical_accuracy"),
    "top5": ("top5", "top5_accuracy", "sparse_top_k_categorical_accuracy",
             "top_k_categorical_accuracy"),
    "lr": ("lr", "learning_rate"),
    "loss": ("loss",),
}


def read_csv_log(path):
    """Reads a CSV log into columns.

    Args:
        path: str or Path.

    Returns:
        dict column name -> float64 (R,) array (NaN for empty/non-numeric).

    Raises:
        ValueError: naming the file when it has no header row.
    """
    with open_file(path) as f:  # a local path or a URL (log.csv on gs://)
        rows = list(csv.reader(f))
    if not rows or not any(h.strip() for h in rows[0]):
        raise ValueError(f"{path}: empty CSV log (expected a header row)")
    header = [h.strip() for h in rows[0]]

    def num(cell):
        try:
            return float(cell)
        except ValueError:
            return math.nan

    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    return {
        name: np.array([num(r[j]) if j < len(r) else math.nan for r in body])
        for j, name in enumerate(header)
    }


def find_column(columns, key, prefix=""):
    """The first alias of `key` (see module doc) present in `columns`.

    Returns:
        str column name, or None.
    """
    for alias in ALIASES[key]:
        if prefix + alias in columns:
            return prefix + alias
    return None


def plot_training(csv_path, out_path, *, title=None):
    """Plots loss, top-1/top-5 and LR curves into one PNG, atomically.

    Panels whose columns are all missing say so instead of a curve.

    Args:
        csv_path: str or Path of the run's CSV log.
        out_path: str or Path of the PNG.
        title: str or None. Figure title; defaults to the CSV path.

    Returns:
        dict panel -> list of the column names plotted.
    """
    cols = read_csv_log(csv_path)
    num_rows = len(next(iter(cols.values())))
    x = cols["epoch"] if "epoch" in cols else np.arange(num_rows, dtype=float)
    panels = {
        "loss": [find_column(cols, "loss"), find_column(cols, "loss", "val_")],
        "accuracy": [find_column(cols, k, p) for k in ("top1", "top5")
                     for p in ("", "val_")],
        "learning rate": [find_column(cols, "lr")],
    }
    panels = {k: [c for c in v if c] for k, v in panels.items()}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    try:
        for ax, (name, names) in zip(axes, panels.items()):
            for col in names:
                ax.plot(x, cols[col], marker="o", markersize=3, label=col)
            ax.set_xlabel("epoch" if "epoch" in cols else "row")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            if names:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no column in log", ha="center",
                        va="center", transform=ax.transAxes)
            finite = cols[names[0]][np.isfinite(cols[names[0]])] if names \
                else np.zeros(0)
            if name == "learning rate" and finite.size and finite.min() > 0:
                ax.set_yscale("log")
        fig.suptitle(title or str(csv_path))
        fig.tight_layout()
        with atomic_write(out_path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return panels
