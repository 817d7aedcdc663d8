"""Cost of thread-safe ``restore()`` (issue 16): per-call routing against a lock, and what the normal path pays.

One Swin2SR (random weights, "lightweight" shape unless ``--quick``) with two AdaptIR adapters restores the same
images four ways, interleaved over repeats (this machine is shared and noisy; read the ratios):

- ``sequential``: one thread, ``restore(model, images, adapter=name)`` for each adapter in turn (the baseline);
- ``threads_routed``: the same calls spread over ``--threads`` threads at once (what the package does: each call
  routes its own samples, nothing global is switched);
- ``threads_locked``: the same threads, each call holding one lock around the whole ``restore()`` (the alternative
  design: correct, but calls take turns);
- ``set_adapter_forward`` vs ``routed_forward``: a bare forward after ``model.set_adapter(name)`` against the same
  forward with ``adapter_names=[name] * B`` (the routing ``restore(adapter=...)`` now uses), single thread.

Also timed in isolation: entering and leaving the per-model session (``shared_model``) and one per-thread slot
set + pop (``call_state``), with the number of slot operations a forward makes, so their share of a forward shows.

    python benchmarks/restore_threads.py --out benchmarks/results
    python benchmarks/restore_threads.py --quick --out /tmp/restore_threads
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

import peft_adaptir  # noqa: F401
from peft_adaptir import AdaptIRConfig, restore
from peft_adaptir.inference.sharing import shared_model
from peft_adaptir.tuner.call_state import slot_pop, slot_set
from peft_adaptir.tuner.layer import AdaptIRLayer


def build(quick: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    depths = [2, 2] if quick else [6, 6, 6, 6]
    config = Swin2SRConfig(
        image_size=64, num_channels=3, embed_dim=16 if quick else 60, depths=depths, num_heads=[2] * len(depths),
        window_size=8, upscale=1, upsampler="", img_range=1.0,
    )  # fmt: skip
    model = get_peft_model(Swin2SRForImageSuperResolution(config), AdaptIRConfig(), adapter_name="derain")
    model.add_adapter("denoise", AdaptIRConfig())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir_branch" in name:
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny model and images: a seconds-scale smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="Python threads calling restore() at once")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one intra-op thread per call: the threads are the parallelism measured here
    model = build(args.quick)
    side = 32 if args.quick else 64
    images = [torch.rand(3, side, side, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    calls = [("derain", images), ("denoise", images)] * args.threads
    lock = threading.Lock()

    def sequential():
        for name, batch in calls:
            restore(model, batch, adapter=name)

    def threaded(locked: bool):
        def one(call):
            name, batch = call
            if locked:
                with lock:
                    return restore(model, batch, adapter=name)
            return restore(model, batch, adapter=name)

        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            list(pool.map(one, calls))

    x = torch.stack(images)

    def set_adapter_forward():
        for name in ("derain", "denoise"):
            model.set_adapter(name)
            with torch.inference_mode():
                model(x)

    def routed_forward():
        for name in ("derain", "denoise"):
            with torch.inference_mode():
                model(x, adapter_names=[name] * len(x))

    methods = {
        "sequential": sequential,
        "threads_routed": lambda: threaded(False),
        "threads_locked": lambda: threaded(True),
        "set_adapter_forward": set_adapter_forward,
        "routed_forward": routed_forward,
    }
    for fn in methods.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn))

    def ratio(name: str, base: str) -> float:
        return statistics.median(t / b for t, b in zip(times[name], times[base]))

    loops = 20000
    start = time.perf_counter()
    for _ in range(loops // 10):
        with shared_model(model, None):
            pass
    session_us = (time.perf_counter() - start) / (loops // 10) * 1e6
    owner = object()
    start = time.perf_counter()
    for _ in range(loops):
        slot_set(owner, None)
        slot_pop(owner)
    slot_us = (time.perf_counter() - start) / loops * 1e6
    span_layers = sum(1 for m in model.modules() if isinstance(m, AdaptIRLayer) and m.span_end_name)
    grid_layers = sum(1 for m in model.modules() if isinstance(m, AdaptIRLayer) and m.grid_capture is not None)
    forward_s = statistics.median(times["set_adapter_forward"]) / 2
    slot_ops = span_layers + grid_layers  # one set + one get/pop pair each per forward
    result = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "quick": args.quick,
        "threads": args.threads,
        "images_per_call": len(images),
        "image_side": side,
        "calls": len(calls),
        "seconds_median": {name: statistics.median(values) for name, values in times.items()},
        "ratio_threads_routed_vs_sequential": ratio("threads_routed", "sequential"),
        "ratio_threads_locked_vs_sequential": ratio("threads_locked", "sequential"),
        "ratio_threads_locked_vs_routed": ratio("threads_locked", "threads_routed"),
        "ratio_routed_forward_vs_set_adapter_forward": ratio("routed_forward", "set_adapter_forward"),
        "session_enter_leave_us": session_us,
        "slot_set_pop_us": slot_us,
        "slot_pairs_per_forward": slot_ops,
        "slot_share_of_forward": slot_ops * slot_us * 1e-6 / forward_s,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "restore_threads_quick.json" if args.quick else "restore_threads.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
