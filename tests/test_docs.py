"""The documentation is true of the code: every ```python block of docs/*.md runs, in page order, and prints what
its comments say; the presets table matches ``PRESETS``; the site builds with ``mkdocs build --strict``.

Conventions for doc authors: a ```python block is executed (use ```bash / ```text for anything else); blocks of a page
share one namespace and run in a fresh working folder. ``print(...)  # TEXT`` (or a print followed by a ``# TEXT``
comment line) asserts the printed line equals TEXT, up to the first ": " (the rest is commentary). The embedded
default base is replaced by a tiny random Swin2SR so the pages run in seconds; Hub calls go to the loopback Hub.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_fixtures import TOKEN, hub, hub_client  # noqa: F401 - fixtures
from tiny_models import tiny_swin2sr_config

import peft_adaptir
from peft_adaptir import PRESETS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.glob("*.md") if "```python" in p.read_text())
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
PRINT_WITH_COMMENT = re.compile(r"^(\s*)print\((.*)\)\s+#\s*(.+)$")
PRINT_ALONE = re.compile(r"^(\s*)print\((.*)\)\s*$")
COMMENT_LINE = re.compile(r"^\s*#\s*(.+)$")


def _expected(comment: str) -> str:
    return comment.split(": ")[0].strip()


def checked_source(block: str) -> str:
    """``block`` with each commented print turned into ``__check__("expected", *args)``."""
    lines = block.splitlines()
    out = []
    for i, line in enumerate(lines):
        match = PRINT_WITH_COMMENT.match(line)
        following = COMMENT_LINE.match(lines[i + 1]) if i + 1 < len(lines) else None
        alone = PRINT_ALONE.match(line)
        if match:
            out.append(f"{match[1]}__check__({_expected(match[3])!r}, {match[2]})")
        elif alone and following:
            out.append(f"{alone[1]}__check__({_expected(following[1])!r}, {alone[2]})")
        else:
            out.append(line)
    return "\n".join(out)


def _check(expected: str, *values) -> None:
    text = " ".join(str(value) for value in values)
    print(text)
    assert text == expected, f"the docs say {expected!r}, the code prints {text!r}"


# pages whose snippets use the shipped task adapters, trained for the real embedded base (small enough to run as is)
REAL_BASE_PAGES = {"blind.md"}
# pages whose snippets need an optional extra: skipped with the install hint where it is missing
PAGE_EXTRAS = {"deploy.md": ("export", ("onnx", "onnxscript", "onnxruntime")), "demo.md": ("demo", ("gradio",))}


def tiny_default_base():
    from transformers import Swin2SRForImageSuperResolution

    torch.manual_seed(0)
    return Swin2SRForImageSuperResolution(tiny_swin2sr_config()).eval()


@pytest.mark.parametrize("page", PAGES)
def test_page_snippets_run(page, hub_client, tmp_path, monkeypatch):  # noqa: F811
    extra, modules = PAGE_EXTRAS.get(page, ("", ()))
    for module in modules:
        pytest.importorskip(module, reason=f"docs/{page} needs the {extra} extra: pip install -e '.[{extra}]'")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    # the package's lazy export caches what it resolves: patch it too (first, so that what the undo puts back is the
    # real function, not the stand-in below)
    if page not in REAL_BASE_PAGES:
        monkeypatch.setattr(peft_adaptir, "load_default_base", tiny_default_base, raising=False)
        monkeypatch.setattr("peft_adaptir.backbones.default_base.load_default_base", tiny_default_base)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page}", "__check__": _check}
    blocks = BLOCK.findall((DOCS / page).read_text())
    assert blocks
    for index, block in enumerate(blocks):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(checked_source(block), f"docs/{page} (python block {index + 1})", "exec"), namespace)


def test_checker_catches_a_wrong_comment():
    with pytest.raises(AssertionError, match="the docs say '3'"):
        exec(checked_source("print(1 + 1)  # 3: wrong"), {"__check__": _check})
    exec(checked_source("print(1 + 1, 'x')\n# 2 x"), {"__check__": _check})


def _table_row(preset) -> str:
    recognised = [f'transformers `model_type="{t}"`' for t in preset.model_types]
    recognised += ["class " + ", ".join(f"`{c}`" for c in preset.class_names)] if preset.class_names else []
    if preset.grid_argument:
        grid = f'`grid_argument="{preset.grid_argument}"`'
    elif preset.grid_size:
        grid = f"`grid_size=[{preset.grid_size[0]}, {preset.grid_size[1]}]`"
    else:
        grid = "(in the tensor)"
    if preset.window_targets:
        grid += "; windows: " + ", ".join(f"`{t}`" for t in preset.window_targets)
    span_end = f"`{preset.span_end}`" if preset.span_end else "(the target)"
    targets = ", ".join(f"`{t}`" for t in preset.target_modules)
    recognised_by = ", ".join(recognised) or "`preset=` only"
    cells = [f"`{preset.name}`", recognised_by, targets, span_end, f"`{preset.layout}`", grid]
    return "| " + " | ".join(cells) + " |"


def test_presets_table_matches_the_code():
    text = (DOCS / "backbones.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"^\| `[a-z0-9_-]+` \|", line)]
    expected = [_table_row(preset) for preset in PRESETS.values()]
    assert rows == expected, "docs/backbones.md's presets table should read:\n" + "\n".join(expected)


def test_no_remote_images_and_the_figure_ships():
    for page in DOCS.rglob("*.md"):
        text = page.read_text()
        assert not re.search(r"!\[[^\]]*\]\(https?:", text), f"{page.name}: remote image"
        assert not re.search(r"<img[^>]+src=\"https?:", text), f"{page.name}: remote image"
    method = (DOCS / "method.md").read_text()
    assert "](figures/adaptir-branch.svg)" in method and (DOCS / "figures" / "adaptir-branch.svg").is_file()


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(tmp_path),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={"NO_MKDOCS_2_WARNING": "1",
                          "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "api" / "config" / "index.html").read_text().count("AdaptIRConfig") > 3
