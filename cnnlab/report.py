"""Plots (matplotlib, Agg backend: PNG files, no windows) and report files."""

from __future__ import annotations

# ---- training runs: learning curves and confusion matrix -------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: list[dict], path, title: str | None = None):
    """Loss and accuracy vs epoch, train and test, side by side; returns the PNG's path.

    history: metrics.csv rows (epoch, train_loss, train_acc, test_loss, test_top1, ...);
    epochs without a test evaluation (test_* None) are skipped on the test lines.
    """
    from pathlib import Path

    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    tested = [r for r in history if r.get("test_top1") is not None]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax_loss.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested], "s-", ms=3,
                 label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [r["train_acc"] for r in history], "o-", ms=3, label="train")
    ax_acc.plot([r["epoch"] for r in tested], [r["test_top1"] for r in tested], "s-", ms=3,
                label="test top-1")
    if tested:
        best = max(tested, key=lambda r: r["test_top1"])
        ax_acc.annotate(f"{best['test_top1']:.2f}%", (best["epoch"], best["test_top1"]),
                        textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(confusion, classes, path, normalize: bool = True):
    """Confusion matrix (rows = true class, columns = predicted) as a PNG; returns its path.

    normalize: show each row as percentages of that class (counts are in the cell labels).
    """
    from pathlib import Path

    fig = confusion_figure(confusion, classes, normalize)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def confusion_figure(confusion, classes, normalize: bool = True):
    """The matplotlib Figure of plot_confusion_matrix (TensorBoard logs it as an image)."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) * 100 if normalize else cm
    n = len(classes)
    size = max(5.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), constrained_layout=True)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(im, ax=ax, label="% of true class" if normalize else "images")
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set(xlabel="predicted", ylabel="true",
           title=f"confusion matrix (top-1 {np.trace(cm) / max(cm.sum(), 1) * 100:.2f}%)")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 50 else "black")
    return fig


# ---- model comparison: parameters vs multiply-adds (`cnnlab compare --plot`) ------------------

def plot_params_vs_macs(rows: list[dict], path, title: str | None = None):
    """Parameters against multiply-adds, both on log scales, one labelled point per model;
    returns the PNG's path. rows: `cnnlab.analysis.compare` rows (model, params, macs, ...)."""
    from cnnlab.outputs import check_output_file

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5), constrained_layout=True)
    macs = [r["macs"] / 1e9 for r in rows]
    params = [r["params"] / 1e6 for r in rows]
    ax.scatter(macs, params, s=36, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    ax.autoscale_view()
    sizes = {tuple(r["input_size"]) for r in rows}
    placed: list[tuple[float, float, float, float]] = []  # label boxes, display pixels
    px = fig.dpi / 72  # pixels per point
    for r, x, y in sorted(zip(rows, macs, params, strict=True), key=lambda t: -t[2]):
        label = r["model"] if len(sizes) == 1 else f"{r['model']} ({r['input_size'][-1]}px)"
        cx, cy = ax.transData.transform((x, y))
        w, h = 4.8 * len(label) * px, 9 * px  # about 8-point text
        # first of: right-above, right-below, left-above, left-below that overlaps no label
        for dx, dy, ha in ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right")):
            x0 = cx + dx * px - (w if ha == "right" else 0)
            box = (x0, cy + dy * px, x0 + w, cy + dy * px + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
        placed.append(box)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                    fontsize=8)
    ax.set(xlabel="multiply-adds per image (GMACs)", ylabel="parameters (millions)",
           title=title or "parameters vs compute")
    ax.grid(which="both", alpha=0.25)
    path = check_output_file(path, (".png",))  # savefig would add ".png" to a bare name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
