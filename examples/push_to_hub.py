"""Publish a trained AdaptIR adapter to the Hugging Face Hub, with a model card, then check it loads back by id.

    hf auth login                     # or export HF_TOKEN=hf_...
    python examples/push_to_hub.py --adapter runs/derain-heavy/adapter --repo-id your-name/adaptir-derain-heavy

Only the adapter goes up (adapter_model.safetensors, adapter_config.json, README.md), not the base model. The card
takes the task and the final validation PSNR/SSIM from the training_log.json that examples/train_adaptir.py writes
next to the adapter. The Hub is whatever HF_ENDPOINT names (huggingface.co by default). After the push the adapter
is downloaded again by repo id into a fresh base model and compared with the local one on a photo (--no-verify skips).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from peft import PeftModel

import peft_adaptir  # noqa: F401 - registers AdaptIR with peft before any adapter is loaded
from peft_adaptir import load_adapters, push_adapter
from peft_adaptir.data.sources import load_skimage_photos, pil_to_tensor


def load_base(spec: str | None) -> torch.nn.Module:
    """The embedded default base (``spec=None``; a clear FileNotFoundError if missing) or a model id / folder."""
    if spec is None:
        from peft_adaptir.backbones.default_base import load_default_base

        return load_default_base()
    from peft_adaptir.backbones.loading import load_base_model

    return load_base_model(spec)


def card_facts(adapter_dir: Path) -> tuple[str | None, dict[str, float]]:
    """(task, metrics) from the training_log.json next to the adapter, if there is one."""
    log_file = adapter_dir / "training_log.json"
    if not log_file.is_file():
        return None, {}
    log = json.loads(log_file.read_text())
    final = log.get("final") or {}
    metrics = {"PSNR (dB)": round(final["psnr"], 3), "SSIM": round(final["ssim"], 4)} if "psnr" in final else {}
    if metrics:
        metrics["validation"] = "held-out photos, 8-bit RGB, BasicSR convention"
    return log.get("config", {}).get("task"), metrics


def restore_once(model: torch.nn.Module) -> torch.Tensor:
    """The model's output on a 64 x 64 crop of a held-out photo: (1, 3, 64, 64) float in [0, 1]."""
    photo = pil_to_tensor(load_skimage_photos("validation")[0]["image"])[:, 200:264, 180:244]
    with torch.no_grad():
        return model(photo[None]).reconstruction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, type=Path, help="Adapter folder (save_pretrained / training).")
    parser.add_argument("--repo-id", required=True, help="Target repository, e.g. your-name/adaptir-derain-heavy.")
    parser.add_argument("--base", default=None, help="Base model id or folder (default: the embedded default base).")
    parser.add_argument("--base-model-id", default=None, help="Hub id of the base model, for the card's metadata.")
    parser.add_argument("--task", default=None, help="Task name for the card (default: from training_log.json).")
    parser.add_argument("--revision", default=None, help="Branch to push to (created if missing; default main).")
    parser.add_argument("--subfolder", default=None, help="Folder inside the repo (several adapters in one repo).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--no-verify", action="store_true", help="Do not download the adapter again to compare.")
    args = parser.parse_args(argv)

    try:
        model = PeftModel.from_pretrained(load_base(args.base), str(args.adapter)).eval()
        task, metrics = card_facts(args.adapter)
        config = model.peft_config["default"]
        if config.base_model_name_or_path and os.path.isdir(config.base_model_name_or_path):
            # a folder on the training machine means nothing on the Hub: state the Hub id or nothing
            config.base_model_name_or_path = args.base_model_id
        url = push_adapter(
            model,
            args.repo_id,
            task=args.task or task,
            base_model=args.base_model_id,
            metrics=metrics or None,
            subfolder=args.subfolder,
            private=args.private,
            revision=args.revision,
        )
        print(f"Pushed {args.adapter} to {args.repo_id}: {url}")
        if args.no_verify:
            return 0
        reloaded = load_adapters(load_base(args.base), {"default": _spec(args)})
    except (ValueError, OSError) as err:  # FileNotFoundError and AdapterHubError are OSErrors
        print(f"push_to_hub: error: {err}", file=sys.stderr)
        return 2
    difference = (restore_once(model) - restore_once(reloaded.eval())).abs().max().item()
    print(f"Loaded {args.repo_id} back by id: max |difference| from the local adapter = {difference:.3g}")
    return 0 if difference == 0 else 1


def _spec(args: argparse.Namespace) -> dict[str, str]:
    spec = {"repo_id": args.repo_id}
    if args.revision:
        spec["revision"] = args.revision
    if args.subfolder:
        spec["subfolder"] = args.subfolder
    return spec


if __name__ == "__main__":
    sys.exit(main())
