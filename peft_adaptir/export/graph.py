"""Reading an exported ONNX graph: operator counts (DFT nodes included) and the metadata the exporter stores."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from .dependencies import require

# metadata_props keys written by the exporter and read back by the ONNX restorer
META_PREFIX = "peft_adaptir."


def _nodes(graph: Any) -> list[Any]:
    """Every node of ``graph`` and of the subgraphs inside its nodes (If/Loop/Scan bodies)."""
    found = []
    for node in graph.node:
        found.append(node)
        for attribute in node.attribute:
            if attribute.g is not None and len(attribute.g.node):
                found.extend(_nodes(attribute.g))
            for sub in attribute.graphs:
                found.extend(_nodes(sub))
    return found


def op_counts(model_or_path: Any) -> Counter:
    """op_type -> count over the main graph, its subgraphs and the model's local functions."""
    onnx = require("onnx")
    model = onnx.load(os.fspath(model_or_path)) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    nodes = _nodes(model.graph)
    for function in model.functions:
        nodes.extend(function.node)
    return Counter(node.op_type for node in nodes)


def dft_node_count(model_or_path: Any) -> int:
    """Number of ``DFT`` nodes (ONNX's FFT operator; also STFT) in the model."""
    counts = op_counts(model_or_path)
    return counts.get("DFT", 0) + counts.get("STFT", 0)


def write_metadata(path: str | os.PathLike, values: dict[str, Any]) -> None:
    """Store ``values`` as ``peft_adaptir.*`` metadata_props of the ONNX file at ``path`` (rewritten in place)."""
    onnx = require("onnx")
    model = onnx.load(os.fspath(path))
    kept = [prop for prop in model.metadata_props if not prop.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = META_PREFIX + key, str(value)
    onnx.save(model, os.fspath(path))


def read_metadata(session_or_path: Any) -> dict[str, str]:
    """The ``peft_adaptir.*`` metadata (prefix removed) of an onnxruntime session or an ONNX file."""
    if isinstance(session_or_path, (str, os.PathLike)):
        onnx = require("onnx")
        model = onnx.load(os.fspath(session_or_path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    else:
        props = dict(session_or_path.get_modelmeta().custom_metadata_map)
    return {key[len(META_PREFIX) :]: value for key, value in props.items() if key.startswith(META_PREFIX)}
