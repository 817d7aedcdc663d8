"""The package's shape: imports run one way (no cycles), ``import peft_adaptir`` stays light, old adapters load."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file

import peft_adaptir
from peft_adaptir.backbones.default_base import load_default_base

PACKAGE = Path(peft_adaptir.__file__).resolve().parent
FIXTURES = Path(__file__).parent / "fixtures"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The package modules an ``import``/``from ... import`` statement in ``module`` loads."""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not base.startswith("peft_adaptir"):
        return []
    # `from pkg import submodule` loads the submodule as well
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports (module level and inside functions alike)."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("peft_adaptir")]
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None. Edges into a package's own ``__init__`` are ignored:
    Python runs a package's ``__init__`` before any of its modules, so a module naming its parent is no cycle."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_package_imports_have_no_cycle():
    graph = import_graph()
    assert "peft_adaptir.tuner.config" in graph and graph["peft_adaptir.tuner.model"]  # the walk saw the tree
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_tuner_constants_import_only_peft():
    tree = ast.parse((PACKAGE / "tuner" / "constants.py").read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {name.split(".")[0] for name in imported} <= {"__future__", "peft"}


def test_import_is_light_and_registers():
    """``import peft_adaptir`` registers AdaptIR but loads no data, plotting or spandrel libraries."""
    code = (
        "import sys, peft_adaptir\n"
        "from peft.utils.peft_types import PeftType\n"
        "heavy = sorted(m for m in ('datasets', 'matplotlib', 'skimage', 'spandrel', 'onnx', 'gradio') "
        "if m in sys.modules)\n"
        "print(heavy, PeftType('ADAPTIR').value)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] ADAPTIR"


def test_public_api_exports_what_users_reach_for():
    for name in peft_adaptir.__all__:
        assert getattr(peft_adaptir, name) is not None, name
    errors = {name for name in peft_adaptir.__all__ if name.endswith("Error")}
    assert {"AdapterMismatchError", "AdapterHubError", "UnsafeCheckpointError", "TrainingDivergedError"} <= errors
    assert peft_adaptir.__version__[0].isdigit()
    for internal in ("register", "enable_card_on_push", "install_load_guard"):
        assert not hasattr(peft_adaptir, internal), internal


def test_adapter_saved_by_the_flat_layout_loads_unchanged():
    """An adapter written by peft-adaptir 0.1.0 (flat modules) loads and gives the outputs it gave then."""
    expected = load_file(FIXTURES / "adapter_v0_1_0_io.safetensors")
    model = PeftModel.from_pretrained(load_default_base(), FIXTURES / "adapter_v0_1_0").eval()
    with torch.no_grad():
        output = model(expected["input"]).reconstruction
    torch.testing.assert_close(output, expected["output"], rtol=0, atol=1e-5)
