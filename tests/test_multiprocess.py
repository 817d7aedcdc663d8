"""``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo): two ranks train one identical adapter.

(``--cpu --num_processes 2`` would silently run ONE process, so the script asserts that there are two.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path

    import torch
    from accelerate import PartialState

    from peft_adaptir.backbones.loading import load_base_model
    from peft_adaptir.training.loop import TrainingConfig, train

    base_dir, out = sys.argv[1], Path(sys.argv[2])
    config = TrainingConfig(
        output_dir=str(out), task="denoise-25", patch_size=16, batch_size=2, steps=4, lr=5e-3, val_every=0,
        val_crop=16, checkpoint_every=2, progress=False, cpu=True,
    )
    result = train(load_base_model(base_dir), config)
    state = PartialState()
    assert state.num_processes == 2, f"expected 2 processes, got {state.num_processes}"
    trained = {n: p.detach().cpu() for n, p in result.model.named_parameters() if p.requires_grad}
    digest = hashlib.sha256()
    for name in sorted(trained):
        digest.update(name.encode() + trained[name].numpy().tobytes())
    up = sum(float(v.abs().sum()) for n, v in trained.items() if ".up." in n)
    total = sum(float(v.abs().sum()) for v in trained.values())
    record = {"sha256": digest.hexdigest(), "up_abs_sum": up, "abs_sum": total, "losses": result.losses}
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))
    """
).replace("import hashlib, sys", "import hashlib, json, sys")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_train_identical_adapters(tmp_path):
    torch.manual_seed(0)
    config = Swin2SRConfig(
        image_size=32, patch_size=1, num_channels=3, embed_dim=16, depths=[2], num_heads=[2], window_size=4,
        mlp_ratio=2.0, upscale=1, upsampler="", img_range=1.0,
    )  # fmt: skip
    Swin2SRForImageSuperResolution(config).save_pretrained(tmp_path / "base")
    script = tmp_path / "train_two.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(script), str(tmp_path / "base"), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert ranks[0]["up_abs_sum"] > 0  # trained away from the zero-initialised up-projection
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 4
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    log = json.loads((out / "adapter" / "training_log.json").read_text())
    assert (log["num_processes"], log["step"]) == (2, 4)
    saved_params = sum(float(v.abs().sum()) for k, v in saved.items() if "running_" not in k and "batches" not in k)
    assert saved_params == pytest.approx(ranks[0]["abs_sum"], rel=1e-6)
    assert sorted(p.name for p in (out / "checkpoints" / "step-4").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
