"""Confusion-matrix picture and per-class precision/recall CSV.

The figure grows with the number of classes (0.12 inch per class, at least
6 inches) and tick labels use a 6 pt font above 40 classes, so every class
name stays legible (one 8.6 pt row per class) up to 200 classes; above that
the ticks are left out.
"""

import csv
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from klassterfork.files import atomic_write  # noqa: E402

MAX_LABELLED_CLASSES = 200


def normalize_rows(cm):
    """Row-normalizes a confusion matrix (each true class sums to 1).

    Args:
        cm: int (C, C) counts, rows = true class.

    Returns:
        float64 (C, C); rows without samples stay all zero.
    """
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def plot_confusion_matrix(cm, class_names, path, *, normalize=False,
                          title=None, dpi=100):
    """Draws `cm` as a heat map and saves it as a PNG, atomically.

    Args:
        cm: int (C, C) counts, rows = true class, columns = predicted.
        class_names: list of C str.
        path: str or Path of the PNG (e.g. `confusion_matrix.png`).
        normalize: bool. Plot row-normalized rates in [0, 1] instead of
            counts. Defaults to False.
        title: str or None. Figure title.
        dpi: int. Defaults to 100.

    Returns:
        The path written.
    """
    cm = np.asarray(cm)
    num = cm.shape[0]
    if cm.ndim != 2 or cm.shape != (num, num) or len(class_names) != num:
        raise ValueError(
            "`cm` must be (C, C) with C = len(class_names). Received: "
            f"cm.shape={cm.shape}, {len(class_names)} class names"
        )
    values = normalize_rows(cm) if normalize else cm
    side = max(6.0, 0.12 * num + 3.0)
    fontsize = 10 if num <= 40 else 6  # 0.12 in = 8.6 pt per class row
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        image = ax.imshow(values, interpolation="nearest", cmap="Blues",
                          vmin=0, vmax=1 if normalize else None)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if num <= MAX_LABELLED_CLASSES:
            ticks = np.arange(num)
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
            ax.set_yticklabels(class_names, fontsize=fontsize)
        if num <= 20:
            fmt = "{:.2f}" if normalize else "{:d}"
            limit = values.max() / 2 if values.size else 0
            for i in range(num):
                for j in range(num):
                    v = values[i, j]
                    ax.text(j, i, fmt.format(v if normalize else int(v)),
                            ha="center", va="center", fontsize=8,
                            color="white" if v > limit else "black")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        kind = "normalized" if normalize else "counts"
        ax.set_title(title or f"Confusion matrix ({kind})")
        fig.tight_layout()
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _fmt(x):
    return "" if isinstance(x, float) and math.isnan(x) else x


def write_per_class_csv(path, class_names, report):
    """Writes one row per class: index, name, support, predicted, correct,
    precision, recall (empty cell where undefined), atomically.

    Args:
        path: str or Path of the CSV.
        class_names: list of C str.
        report: dict from `metrics.per_class_precision_recall`.

    Returns:
        The path written.
    """
    with atomic_write(path) as f:
        writer = csv.writer(f)
        writer.writerow(["class_index", "class_name", "support", "predicted",
                         "correct", "precision", "recall"])
        for c, name in enumerate(class_names):
            writer.writerow([
                c, name, int(report["support"][c]),
                int(report["predicted"][c]), int(report["correct"][c]),
                _fmt(float(report["precision"][c])),
                _fmt(float(report["recall"][c])),
            ])
    return path
