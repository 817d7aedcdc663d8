"""The demo's model: one shared restorer, the task chosen per image and per request, nothing kept between requests.

Requests never change the model: each call routes its images through peft's mixed-batch ``adapter_names=`` path (no
``set_adapter``). Overlapping requests are safe because ``restore()`` is: AdaptIR routing lives in each thread's call
state, and models of other peft methods take turns on ``restore()``'s own per-model lock (``inference/sharing.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image
from torch import nn

from ..inference.pipeline import restore
from ..tuner.constants import BASE_ADAPTER_NAME
from ..tuner.model import adapter_names_of

__all__ = ["AUTO_TASK", "DemoEngine", "Restored", "Router", "ShippedRouter", "UnknownTaskError", "find_router"]

AUTO_TASK = "auto"
"""The task name that lets the router pick an adapter per image (offered only when a router is available)."""

Router = Callable[[nn.Module, Sequence[Image.Image]], list[tuple[str, float]]]
"""``router(model, images) -> [(task, probability), ...]``: one decision per image, made on the whole image."""


class UnknownTaskError(ValueError):
    """A task that is neither a loaded adapter nor ``auto``; the message lists the choices."""


@dataclass(frozen=True)
class Restored:
    """One restored image, the task that produced it and, for ``auto``, the router's probability for that task."""

    image: Image.Image
    task: str
    confidence: float | None


class ShippedRouter:
    """The routing package's :class:`~peft_adaptir.routing.router.DegradationRouter` as a demo :data:`Router`.

    Called as a ``Router`` it answers the most probable task per image; the engine instead hands ``auto`` images to
    ``restore(..., adapter_names=[..., "auto", ...], router=...)`` so that the package's own decision applies
    (a low-confidence image is restored with a soft blend of the top adapters, not just the argmax).
    """

    def __init__(self, router: nn.Module) -> None:
        self.router = router

    def __call__(self, model: nn.Module, images: Sequence[Image.Image]) -> list[tuple[str, float]]:
        from ..data.sources import pil_to_tensor
        from ..routing.auto import decide

        tensors = [pil_to_tensor(image.convert("RGB")) for image in images]
        return [(d.task, d.probability) for d in decide(model, self.router, tensors)]


def find_router(model: nn.Module) -> Router | None:
    """The degradation router for ``model`` if this install ships one that fits it, else None.

    ``auto`` is offered only when this returns a router: the shipped router must know exactly the model's adapters
    and have been trained on its base (``peft_adaptir.routing.auto.check_router``).
    """
    try:
        auto = importlib.import_module("peft_adaptir.routing.auto")
        router = auto.resolve_router(None)
        auto.check_router(model, router)
    except (ImportError, FileNotFoundError, ValueError):
        return None
    return ShippedRouter(router)


class DemoEngine:
    """A restorer shared by every request of the demo.

    Args:
        model: a transformers restorer or a ``PeftModel`` holding one adapter per task (named by task).
        router: picks the task of ``auto`` images (see :data:`Router`); None: ``auto`` is not offered.
        batch_size: images or tiles per forward pass.
    """

    def __init__(self, model: nn.Module, *, router: Router | None = None, batch_size: int = 4) -> None:
        self.model = model.eval()
        self.router = router
        self.batch_size = batch_size

    @property
    def tasks(self) -> list[str]:
        """The loaded adapters (one per task), then ``__base__`` (the base model without adapter)."""
        return [*adapter_names_of(self.model), BASE_ADAPTER_NAME]

    @property
    def choices(self) -> list[str]:
        """What a user may pick per image: ``auto`` first when a router is available, then :attr:`tasks`."""
        return ([AUTO_TASK] if self.router is not None else []) + self.tasks

    def check_task(self, task: str) -> str:
        """``task`` if it can be chosen; :class:`UnknownTaskError` naming the choices otherwise."""
        if task not in self.choices:
            hint = "" if self.router is not None else f" ({AUTO_TASK!r} needs a degradation router; none is loaded)"
            raise UnknownTaskError(f"Unknown task {task!r}; choose one of {', '.join(self.choices)}{hint}.")
        return task

    def restore(
        self, images: Sequence[Image.Image], tasks: Sequence[str], *, tile_size: int | None = None
    ) -> list[Restored]:
        """Restore ``images`` (PIL: RGB, RGBA, L or LA), image i with ``tasks[i]``; results keep each image's mode.

        ``tile_size``: as :func:`peft_adaptir.restore` (None: tile images with a side over 512; 0: never). A tqdm bar
        over batches is shown, so a caller tracking tqdm (Gradio's ``gr.Progress(track_tqdm=True)``) sees progress.
        """
        if len(images) != len(tasks):
            raise ValueError(f"{len(images)} images but {len(tasks)} tasks; give one task per image.")
        tasks = [self.check_task(task) for task in tasks]
        if isinstance(self.router, ShippedRouter) and AUTO_TASK in tasks:
            return self._restore_auto(images, tasks, tile_size)
        chosen, confidences = self._route(images, tasks)
        restored = self._run(images, chosen, tile_size)
        return [Restored(image, task, conf) for image, task, conf in zip(restored, chosen, confidences)]

    def _restore_auto(self, images: Sequence[Image.Image], tasks: list[str], tile_size: int | None) -> list[Restored]:
        """``auto`` images decided by the package's router inside ``restore`` (hard, or soft when unsure)."""
        restored, decisions = restore(
            self.model, list(images), adapter_names=tasks, router=self.router.router, tile_size=tile_size,
            batch_size=self.batch_size, progress=True,
        )  # fmt: skip
        results = []
        for image, task, decision in zip(restored, tasks, decisions):
            if decision is None:
                results.append(Restored(image, task, None))
            else:
                label = decision.task if decision.mode == "hard" else "+".join(decision.weights) or BASE_ADAPTER_NAME
                results.append(Restored(image, label, float(decision.probability)))
        return results

    def _route(self, images: Sequence[Image.Image], tasks: list[str]) -> tuple[list[str], list[float | None]]:
        """Replace each ``auto`` by the router's task for that image (decided on the whole image, never per tile)."""
        auto = [i for i, task in enumerate(tasks) if task == AUTO_TASK]
        chosen, confidences = list(tasks), [None] * len(tasks)
        if auto:
            decisions = self.router(self.model, [images[i] for i in auto])
            for i, (task, probability) in zip(auto, decisions):
                chosen[i], confidences[i] = task, float(probability)
        return chosen, confidences

    def _run(self, images: Sequence[Image.Image], tasks: list[str], tile_size: int | None) -> list[Image.Image]:
        if not images:
            return []
        if not adapter_names_of(self.model):  # a plain base model: every task is __base__
            return restore(self.model, list(images), tile_size=tile_size, batch_size=self.batch_size, progress=True)
        return restore(
            self.model, list(images), adapter_names=tasks, tile_size=tile_size, batch_size=self.batch_size,
            progress=True,
        )  # fmt: skip
