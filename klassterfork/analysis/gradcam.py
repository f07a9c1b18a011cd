"""Grad-CAM for video models: 3D CNNs, TSN-style 2D models and ViTs.

Grad-CAM (Selvaraju et al., ICCV 2017) on a target activation A with
channels c, for the score y of class k (the logit, before softmax):

    w_c = mean over the positions p of dy / dA[p, c]
    cam[p] = ReLU(sum_c w_c * A[p, c])

The positions depend on the model family (`layout`):

- "3d" (R(2+1)D, R3D, Model3D1): A is (1, T', H', W', C); positions are
  (T', H', W'), so one weight per channel for the whole clip.
- "segments" (TSN / TSM / TDN): A is (S, H', W', C), the segments folded
  into the batch; each segment gets its own weights (mean over H', W') and
  its own map, so the map is (S, H', W').
- "tokens" (VideoViT): A is (1, N, D) tokens; the gradients are averaged
  over the tokens and the token map is reshaped to the tubelet grid
  (T / 2, H / 16, W / 16) (`grid`, found from the `patch_embed` layer).

The default target is the input of the model's global pooling layer (named
"pool" in every klassterfork family): the last conv block's output for the
CNNs, the last transformer block's tokens for the ViT. The low-resolution map
is then brought to the clip: each time slice is resized (bilinear) to the
frame size and repeated to the clip length (slice `floor(t * T' / T)` for
frame t), and the whole clip is min-max normalized to [0, 1] (one range for
all frames, so weak frames stay weak). `overlay` blends a JET colour map.
"""

import io
import math

import cv2
import keras
import numpy as np
import tensorflow as tf

from klassterfork.files import write_bytes_atomic

LAYOUTS = ("3d", "segments", "tokens")
POOL_CLASSES = ("GlobalAveragePooling3D", "GlobalAveragePooling2D",
                "GlobalAveragePooling1D")


def find_target(model, layer_name=None):
    """The activation Grad-CAM differentiates: a layer's output, or the input
    of the global pooling layer when no name is given.

    Args:
        model: functional `keras.Model`.
        layer_name: str or None. A layer whose output is the target.

    Returns:
        (KerasTensor, str): the symbolic target and a name for it.

    Raises:
        ValueError: unknown layer name, or no global pooling layer.
    """
    if layer_name is not None:
        names = [layer.name for layer in model.layers]
        if layer_name not in names:
            raise ValueError(
                f"`layer_name` must name a layer of model {model.name!r}. "
                f"Received: layer_name={layer_name!r}; the last layers are "
                f"{', '.join(names[-8:])}")
        return model.get_layer(layer_name).output, layer_name
    pools = [layer for layer in model.layers if type(layer).__name__ in POOL_CLASSES]
    if not pools:
        raise ValueError(
            f"model {model.name!r} has no global average pooling layer; pass "
            "`layer_name` (the last conv block's output).")
    pool = next((p for p in pools if p.name == "pool"), pools[-1])
    target = pool.input
    history = getattr(target, "_keras_history", None)
    source = getattr(history, "operation", None) if history else None
    return target, getattr(source, "name", f"{pool.name}_input")


def token_grid(model):
    """(T', H', W') of a ViT's tubelet grid, from its `patch_embed` layer."""
    try:
        shape = model.get_layer("patch_embed").output.shape
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no `patch_embed` layer; pass `grid` "
            "(T', H', W') for a token layout.") from None
    return tuple(int(s) for s in shape[1:4])


def activations_and_gradients(model, clip, class_index, *, target):
    """A and dy/dA for one clip, y = the model's output `class_index`.

    Args:
        model: `keras.Model`, (B, T, H, W, C) -> (B, num_classes) logits.
        clip: float32 (T, H, W, C), the standardized model input.
        class_index: int or None. None: the top-scoring class.
        target: KerasTensor. From `find_target`.

    Returns:
        (activations, gradients, logits, class_index): numpy float32 arrays
        with the target's shape for a batch of one clip, logits
        (num_classes,) and the class used.
    """
    cam_model = keras.Model(model.inputs, [target, model.output])
    batch = tf.convert_to_tensor(np.asarray(clip)[None])
    with tf.GradientTape() as tape:
        activations, logits = cam_model(batch, training=False)
        if class_index is None:
            class_index = int(tf.argmax(logits[0]))
        score = logits[:, class_index]
    gradients = tape.gradient(score, activations)
    if gradients is None:
        raise ValueError("the class score does not depend on the target activation.")
    return (np.asarray(activations, np.float32), np.asarray(gradients, np.float32),
            np.asarray(logits[0], np.float32), int(class_index))


def cam_from_gradients(activations, gradients, *, layout="3d", grid=None):
    """The Grad-CAM map from a target activation and its gradients.

    Args:
        activations, gradients: float arrays of one shape: (1, T', H', W', C)
            for "3d", (S, H', W', C) for "segments", (1, N, D) for "tokens".
        layout: str. One of "3d", "segments", "tokens". Defaults to "3d".
        grid: (T', H', W') with T' * H' * W' = N; required for "tokens".

    Returns:
        float32 (T', H', W') (S, H', W' for "segments"), >= 0, not normalized.
    """
    if layout not in LAYOUTS:
        raise ValueError(
            f"`layout` must be one of {LAYOUTS}. Received: layout={layout!r}")
    a = np.asarray(activations, np.float32)
    g = np.asarray(gradients, np.float32)
    if a.shape != g.shape:
        raise ValueError(
            f"activations {a.shape} and gradients {g.shape} differ in shape")
    expected = {"3d": 5, "segments": 4, "tokens": 3}[layout]
    if a.ndim != expected:
        raise ValueError(
            f"layout={layout!r} needs rank-{expected} activations. "
            f"Received: shape {a.shape}")
    if layout == "tokens":
        if grid is None or int(np.prod(grid)) != a.shape[1]:
            raise ValueError(
                f"`grid` must multiply to the {a.shape[1]} tokens. "
                f"Received: grid={grid}")
        a = a.reshape((a.shape[0], *grid, a.shape[-1]))
        g = g.reshape(a.shape)
    if layout == "segments":
        weights = g.mean(axis=(1, 2), keepdims=True)  # per segment
        return np.maximum((weights * a).sum(axis=-1), 0.0)
    if a.shape[0] != 1:
        raise ValueError(f"expected a batch of one clip. Received: shape {a.shape}")
    weights = g[0].mean(axis=(0, 1, 2))
    return np.maximum(a[0] @ weights, 0.0)


def upsample_cam(cam, *, num_frames, height, width):
    """(T', H', W') map -> (num_frames, height, width) in [0, 1].

    Each slice is resized bilinearly to (height, width), frame t takes slice
    floor(t * T' / num_frames), and the clip is min-max normalized (all zero
    when the map is constant).
    """
    cam = np.asarray(cam, np.float32)
    slices = [cv2.resize(s, (width, height), interpolation=cv2.INTER_LINEAR)
              for s in cam]
    index = (np.arange(num_frames) * len(slices)) // num_frames
    out = np.stack([slices[i] for i in index])
    low, high = float(out.min()), float(out.max())
    if high - low <= 1e-12:
        return np.zeros_like(out)
    return (out - low) / (high - low)


def layout_of(target, model):
    """"3d", "segments" or "tokens" from the target's rank and the model."""
    rank = len(target.shape)
    if rank == 5:
        return "3d"
    if rank == 4:
        return "segments"
    if rank == 3:
        return "tokens"
    raise ValueError(f"cannot Grad-CAM a rank-{rank} activation {tuple(target.shape)}; "
                     "choose a conv or token layer with `layer_name`.")


def grad_cam(model, clip, *, class_index=None, layer_name=None, grid=None):
    """Grad-CAM of one clip, at the clip's resolution.

    Args:
        model: `keras.Model`, (B, T, H, W, C) -> (B, num_classes) logits.
        clip: float32 (T, H, W, C), standardized as the model expects.
        class_index: int or None. The class to explain; None: the top one.
        layer_name: str or None. Target layer; None: the global pooling
            layer's input (see the module docstring).
        grid: (T', H', W') for a token layout; None: from `patch_embed`.

    Returns:
        dict: `cam` float32 (T, H, W) in [0, 1]; `raw` the low-resolution map;
        `logits` (num_classes,); `class_index`; `layer`; `layout`.
    """
    clip = np.asarray(clip, np.float32)
    target, name = find_target(model, layer_name)
    layout = layout_of(target, model)
    if layout == "tokens" and grid is None:
        grid = token_grid(model)
    a, g, logits, class_index = activations_and_gradients(
        model, clip, class_index, target=target)
    raw = cam_from_gradients(a, g, layout=layout, grid=grid)
    cam = upsample_cam(raw, num_frames=clip.shape[0], height=clip.shape[1],
                       width=clip.shape[2])
    return {"cam": cam, "raw": raw, "logits": logits, "class_index": class_index,
            "layer": name, "layout": layout}


def overlay(frames, cam, *, alpha=0.5):
    """Blends a JET colour map of `cam` over the frames.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        cam: float (T, H, W) in [0, 1].
        alpha: float. Weight of the heat map. Defaults to 0.5.

    Returns:
        uint8 (T, H, W, 3) RGB.
    """
    frames = np.asarray(frames, np.uint8)
    heat = np.uint8(np.round(np.clip(cam, 0.0, 1.0) * 255))
    out = []
    for frame, h in zip(frames, heat):
        jet = cv2.cvtColor(cv2.applyColorMap(h, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        out.append(np.round((1 - alpha) * frame + alpha * jet).astype(np.uint8))
    return np.stack(out)




def write_gif(path, frames, *, fps=4.0, scale=1):
    """Writes uint8 (T, H, W, 3) frames as a looping animated GIF (atomic)."""
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    if scale != 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST)
                  for im in images]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(round(1000 / fps)), loop=0)
    write_bytes_atomic(path, buffer.getvalue())


# Strip geometry, in pixels at STRIP_DPI. Every box is placed explicitly
# (no tight_layout, whose per-row title padding squashed the top row and
# left a band of white under the text): both rows of panels keep the frames'
# aspect, and the text block is as tall as its lines.
STRIP_DPI = 100
STRIP_PANEL = 130  # panel width
STRIP_GAP = 6  # between panels and between the rows
STRIP_MARGIN = 6
STRIP_LEFT = 18  # room for the "Grad-CAM" row label
STRIP_LINE = 14  # one line of 8-point text (11.1 px glyphs + leading)
STRIP_FONT = 8


def strip_layout(num_lines, columns, frame_height, frame_width, *, text_width=0):
    """Pixel boxes of a Grad-CAM strip (origin top left).

    Args:
        num_lines: int. Lines of the title block.
        columns: int. Panels per row.
        frame_height, frame_width: int. Frame size (sets the panel aspect).
        text_width: float. Widest text line in pixels; a figure narrower
            than the text is widened and the panels centred. Defaults to 0.

    Returns:
        dict: `size` (width, height) of the figure, `text_top` (y of the
        first text line), `panels` a list of rows (frames, overlays), each a
        list of (x, y, w, h) boxes.
    """
    panel_w = STRIP_PANEL
    panel_h = max(1, round(STRIP_PANEL * frame_height / frame_width))
    text_h = STRIP_LINE * num_lines
    top = STRIP_MARGIN + text_h + STRIP_GAP + STRIP_LINE  # + the "t=" labels
    panels = STRIP_LEFT + columns * panel_w + (columns - 1) * STRIP_GAP + STRIP_MARGIN
    width = max(panels, math.ceil(text_width) + 2 * STRIP_MARGIN)
    left = STRIP_LEFT + (width - panels) // 2
    height = top + 2 * panel_h + STRIP_GAP + STRIP_MARGIN
    rows = []
    for r in range(2):
        y = top + r * (panel_h + STRIP_GAP)
        rows.append([(left + j * (panel_w + STRIP_GAP), y, panel_w, panel_h)
                     for j in range(columns)])
    return {"size": (width, height), "text_top": STRIP_MARGIN, "panels": rows}


def write_strip(path, frames, overlays, *, predictions, true_label=None, title=None,
                max_columns=8):
    """A PNG: the title block, frames on top, Grad-CAM overlays below.

    Both rows show the frames at their own aspect, one panel per picked
    frame, `strip_layout` pixels at `STRIP_DPI`.

    Args:
        path: str. Output `.png`.
        frames, overlays: uint8 (T, H, W, 3); at most `max_columns` frames,
            evenly spaced, are shown.
        predictions: list of (name, probability), the top-k.
        true_label: str or None. Shown as "true: ...".
        title: str or None. First title line (e.g. the video file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(frames)
    columns = min(count, max_columns)
    picks = np.linspace(0, count - 1, columns).round().astype(int)
    lines = [title] if title else []
    if true_label is not None:
        lines.append(f"true: {true_label}")
    lines.extend(f"{p:.3f} -> {n}" for n, p in predictions)
    fig = plt.figure(dpi=STRIP_DPI)
    text = fig.text(0.5, 1, "\n".join(lines), ha="center", va="top",
                    fontsize=STRIP_FONT,
                    linespacing=STRIP_LINE / (STRIP_FONT * STRIP_DPI / 72))
    text_width = text.get_window_extent(fig.canvas.get_renderer()).width
    layout = strip_layout(len(lines), columns, frames.shape[1], frames.shape[2],
                          text_width=text_width if lines else 0)
    width, height = layout["size"]
    fig.set_size_inches(width / STRIP_DPI, height / STRIP_DPI)
    text.set_y(1 - layout["text_top"] / height)

    def box(x, y, w, h):  # top-left pixels -> matplotlib's bottom-left fractions
        return (x / width, 1 - (y + h) / height, w / width, h / height)

    for row, images in zip(layout["panels"], (frames, overlays)):
        for (x, y, w, h), t in zip(row, picks):
            ax = fig.add_axes(box(x, y, w, h))
            ax.imshow(images[t], aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for (x, y, w, _), t in zip(layout["panels"][0], picks):
        fig.text((x + w / 2) / width, 1 - (y - 2) / height, f"t={t}", ha="center",
                 va="bottom", fontsize=STRIP_FONT)
    x, y, _, h = layout["panels"][1][0]
    fig.text((x - 4) / width, 1 - (y + h / 2) / height, "Grad-CAM", ha="right",
             va="center", rotation=90, fontsize=STRIP_FONT)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=STRIP_DPI)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
