#!/usr/bin/env bash
# GPU check for issue 9 / issue 4's benchmark. For a later session WITH a device machine (not runnable here).
# Run from the repository root on the device, e.g. with the `run` tool:
#   bash benchmarks/gpu_check.sh         (it writes under $OUT)
# Needs: torch with CUDA, transformers, peft, the repo (pip install -e . or PYTHONPATH=.). Its steps run in order of
# importance, each under its own timeout; together at most 590 s (one device call may run 600 s).
set -u
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
PY="${PYTHON:-python}"
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" > "$OUT/env.txt" 2>&1

# 1. FFT under autocast (odd, non-power-of-two sizes) + equivalence with the reference on CUDA, and bf16 training steps.
cat > "$OUT/gpu_checks.py" <<'PYEOF'
import json, math, time, torch
import peft_adaptir
from peft import get_peft_model
from peft_adaptir import AdaptIRConfig
from peft_adaptir.tuner.branch import AdaptIRBranch, FrequencyAffine
from peft_adaptir.training.optim import adapter_optimizer
from peft_adaptir.tuner.reference import reference_branch_forward, reference_frequency_affine
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution
dev = "cuda"; out = {}
torch.manual_seed(0)
fam = FrequencyAffine(7).to(dev)
with torch.no_grad():
    for p in fam.parameters(): p.add_(0.3 * torch.randn_like(p))
for dtype in (torch.bfloat16, torch.float16):
    for size in ((30, 45), (64, 64), (7, 9)):
        x = torch.randn(2, 7, *size, device=dev, dtype=dtype, requires_grad=True)
        with torch.autocast(dev, dtype=dtype):
            y = fam(x)
        y.float().square().sum().backward()
        ref = reference_frequency_affine(fam, x.detach().float())
        out[f"fam_{dtype}_{size}"] = dict(out_dtype=str(y.dtype), max_err=(y.float() - ref).abs().max().item(),
                                          ref_max=ref.abs().max().item(), grad_finite=bool(torch.isfinite(x.grad).all()))
for fusion in ("gated", "sum"):
    b = AdaptIRBranch(60, 6, fusion=fusion, init_weights=False).to(dev).train()
    tok = torch.randn(4, 48 * 40, 60, device=dev, requires_grad=True)
    x = tok.transpose(1, 2).reshape(4, 60, 48, 40)
    g = torch.randn(4, 60, 48, 40, device=dev)
    state = {k: v.clone() for k, v in b.state_dict().items()}
    reference_branch_forward(b, x).backward(g); ref_dx = tok.grad.clone(); tok.grad = None
    b.load_state_dict(state); y = b(x); y.backward(g)
    out[f"branch_{fusion}_fp32_dx_err"] = ((tok.grad - ref_dx).abs().max() / ref_dx.abs().max()).item()
cfg = Swin2SRConfig(image_size=64, embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8, mlp_ratio=2.0,
                    upscale=2, upsampler="pixelshuffledirect")
model = get_peft_model(Swin2SRForImageSuperResolution(cfg).to(dev), AdaptIRConfig()).train()
opt = adapter_optimizer([p for p in model.parameters() if p.requires_grad], lr=1e-3)
x = torch.rand(16, 3, 64, 64, device=dev); target = torch.rand(16, 3, 128, 128, device=dev)
losses, times = [], []
for step in range(20):
    torch.cuda.synchronize(); t = time.perf_counter()
    with torch.autocast(dev, dtype=torch.bfloat16):
        loss = (model(pixel_values=x).reconstruction.float() - target).abs().mean()
    loss.backward(); opt.step(); opt.zero_grad()
    torch.cuda.synchronize(); times.append(time.perf_counter() - t); losses.append(loss.item())
out["bf16_train"] = dict(losses=losses, finite=all(math.isfinite(v) for v in losses), decreased=losses[-1] < losses[0],
                         median_step_s=sorted(times[5:])[len(times[5:]) // 2])
print(json.dumps(out, indent=1)); json.dump(out, open(__import__("os").environ["OUT"] + "/gpu_checks.json", "w"), indent=1)
PYEOF
timeout 90 "$PY" "$OUT/gpu_checks.py" > "$OUT/gpu_checks.log" 2>&1; echo "gpu_checks rc=$?" | tee -a "$OUT/summary.txt"

# 2. torch.compile on CUDA: whole branch, and the real-arithmetic frequency step against the package's (docs/speed.md).
timeout 90 "$PY" benchmarks/compile_check.py --device cuda --out "$OUT" > "$OUT/compile_check.log" 2>&1
echo "compile_check rc=$?" | tee -a "$OUT/summary.txt"

# 3. The speed benchmark on CUDA only (fp32 and bf16, both shapes, 256x256 inference), results + profiles under $OUT.
timeout 300 "$PY" benchmarks/speed.py --device cuda --out "$OUT/speed" > "$OUT/speed.log" 2>&1
echo "speed rc=$?" | tee -a "$OUT/summary.txt"

# 4. torch.compile'd against eager, one method at a time (bottleneck first), lightweight shape, bf16; the JSON is
#    rewritten after each method, so what finished before the timeout is kept.
timeout 110 "$PY" benchmarks/compile_speed.py --device cuda --precision bf16 --train-batch 16 --train-size 64 \
    --infer-size 256 --repeats 5 --methods bottleneck sum gated --out "$OUT" > "$OUT/speed_compile.log" 2>&1
echo "speed_compile rc=$?" | tee -a "$OUT/summary.txt"
tail -40 "$OUT/speed.log"
