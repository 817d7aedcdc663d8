"""The demo page (Gradio Blocks): upload images, pick a task per image, compare before/after, download results.

Every request reads its own uploads, writes its results to its own folder and returns them; the only thing shared
between requests (and browser sessions) is the model inside the :class:`~peft_adaptir.demo.engine.DemoEngine`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from ..tuner.constants import BASE_ADAPTER_NAME
from .engine import AUTO_TASK, DemoEngine, Restored, UnknownTaskError
from .uploads import MAX_FILE_BYTES, MAX_PIXELS, UploadError, parse_tasks, psnr_against, read_upload

try:
    import gradio as gr
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError("The demo needs gradio: pip install 'peft-adaptir[demo]'.") from err

__all__ = ["build_app", "TABLE_HEADERS"]

TABLE_HEADERS = ["image", "task", "confidence", "PSNR input (dB)", "PSNR result (dB)", "size"]
_KEEP_RESULTS_S = 3600  # result folders older than this are removed at the next request


def _upload_paths(files: Any) -> list[Path]:
    """Paths of Gradio ``File(file_count="multiple")`` values (str paths or objects with ``.name``)."""
    if not files:
        return []
    return [Path(getattr(item, "name", item)) for item in files]


def _display(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` as RGB(A) at ``size`` (bicubic), for side-by-side display of a super-resolved result."""
    image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class _Requests:
    """One folder per request under a root owned by the app; folders older than an hour are pruned."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="peft-adaptir-demo-"))
        atexit.register(shutil.rmtree, self.root, True)

    def new_folder(self) -> Path:
        now = time.time()
        for old in self.root.iterdir():
            if now - old.stat().st_mtime > _KEEP_RESULTS_S:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.root / uuid.uuid4().hex
        folder.mkdir()
        return folder


def _save(results: list[Restored], names: list[str], folder: Path) -> list[Path]:
    """``<stem>-<task>.png`` per result (``-2``, ``-3`` ... for clashing names), in the image's own mode."""
    paths: list[Path] = []
    for result, name in zip(results, names):
        stem, target, n = f"{Path(name).stem}-{result.task}", None, 1
        while target is None or target in paths:
            target = folder / (f"{stem}.png" if n == 1 else f"{stem}-{n}.png")
            n += 1
        result.image.save(target)
        paths.append(target)
    return paths


def _run(
    engine: DemoEngine,
    requests: _Requests,
    files: Any,
    task: str,
    per_image: str,
    references: Any,
    tile_size: float | None,
    progress: gr.Progress,
) -> tuple[Any, list[tuple[Image.Image, str]], list[list[str]], list[str], list[tuple[Image.Image, Image.Image]]]:
    paths, reference_paths = _upload_paths(files), _upload_paths(references)
    if not paths:
        raise UploadError("Upload at least one image first.")
    if reference_paths and len(reference_paths) != len(paths):
        raise UploadError(
            f"{len(reference_paths)} clean reference(s) for {len(paths)} image(s): upload one reference per image, "
            "in the same order, or none."
        )
    tasks = [engine.check_task(name) for name in parse_tasks(per_image, len(paths), task)]
    tile = None if tile_size is None else int(tile_size)
    if tile is not None and tile < 0:
        raise UploadError(f"Tile size must be 0 (never tile) or a positive number of pixels, got {tile}.")
    progress(0, desc="Reading uploads")
    images = [read_upload(path) for path in paths]
    clean = [read_upload(path) for path in reference_paths]
    progress(0.05, desc="Restoring")
    results = engine.restore(images, tasks, tile_size=tile)
    saved = _save(results, [p.name for p in paths], requests.new_folder())
    rows, pairs = [], []
    for i, (path, image, result) in enumerate(zip(paths, images, results)):
        psnr_in = psnr_out = None
        if clean:
            psnr_out = psnr_against(result.image, clean[i], reference_paths[i].name)
            if image.size == clean[i].size:
                psnr_in = psnr_against(image, clean[i], reference_paths[i].name)
        size = f"{image.size[0]} x {image.size[1]} -> {result.image.size[0]} x {result.image.size[1]}"
        rows.append([path.name, result.task, _fmt(result.confidence), _fmt(psnr_in), _fmt(psnr_out), size])
        pairs.append((_display(image, result.image.size), _display(result.image, result.image.size)))
    gallery = [(after, f"{row[0]}: {row[1]}") for (_, after), row in zip(pairs, rows)]
    return pairs[0], gallery, rows, [str(path) for path in saved], pairs


def _intro(engine: DemoEngine) -> str:
    tasks = ", ".join(f"`{task}`" for task in engine.tasks)
    auto = (
        f" Choose `{AUTO_TASK}` to let the degradation router pick the adapter for each image."
        if AUTO_TASK in engine.choices
        else ""
    )
    side = int(MAX_PIXELS**0.5)
    return (
        "# peft-adaptir: AdaptIR task adapters\n"
        f"Upload one or several photos and pick what to remove. Tasks loaded: {tasks} "
        f"(`{BASE_ADAPTER_NAME}` is the base model without adapter).{auto} "
        f"Limits: images up to {MAX_PIXELS:,} pixels ({side} x {side}) and {MAX_FILE_BYTES // 2**20} MiB; "
        "images larger than the tile size are restored in overlapping tiles. Upload the clean originals too to see "
        "the PSNR."
    )


def build_app(engine: DemoEngine, *, concurrency_limit: int = 2) -> gr.Blocks:
    """The demo page for ``engine``; ``demo.launch(...)`` serves it. API endpoint: ``/restore``.

    ``/restore`` takes (image files, task, tasks per image as "t1, t2, ...", clean reference files, tile size) and
    returns (before/after pair of the first image, gallery of results, table rows, result PNG files).
    """
    requests = _Requests()
    default = engine.choices[0]

    def run(files, task, per_image, references, tile_size, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        try:
            first, gallery, rows, saved, pairs = _run(
                engine, requests, files, task, per_image, references, tile_size, progress
            )
        except (UploadError, UnknownTaskError) as err:
            raise gr.Error(str(err), title="Cannot restore") from err
        except ValueError as err:  # a restore() refusal (model and image sizes, ...): still the user's to fix
            raise gr.Error(str(err), title="Restoration failed") from err
        return first, gallery, rows, saved, pairs

    def select(pairs, event: gr.SelectData):
        return pairs[event.index] if pairs and event.index is not None else None

    with gr.Blocks(title="peft-adaptir demo") as demo:
        gr.Markdown(_intro(engine))
        pairs = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images", file_count="multiple", height=150, elem_id="images")
                task = gr.Dropdown(engine.choices, value=default, label="Task", elem_id="task")
                per_image = gr.Textbox(
                    label="Task per image (optional)",
                    placeholder="one per image, comma-separated; a blank uses the Task above",
                    elem_id="per-image",
                )
                button = gr.Button("Restore", variant="primary", elem_id="run")
                references = gr.File(
                    label="Clean references (optional, one per image, for PSNR)",
                    file_count="multiple",
                    height=150,
                    elem_id="references",
                )
                tile_size = gr.Number(512, precision=0, minimum=0, label="Tile size (0: never tile)")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(
                    label="Before / after", type="pil", format="png", max_height=420, elem_id="slider"
                )
                gallery = gr.Gallery(
                    label="Results (click one to compare)",
                    format="png",
                    columns=6,
                    object_fit="contain",
                    fit_columns=False,
                    height=180,
                    elem_id="results",
                )
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Details", interactive=False, elem_id="details")
                downloads = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="downloads")
        button.click(
            run,
            inputs=[files, task, per_image, references, tile_size],
            outputs=[slider, gallery, table, downloads, pairs],
            api_name="restore",
            concurrency_limit=concurrency_limit,
        )
        gallery.select(select, inputs=[pairs], outputs=[slider], api_name=False)
    return demo
