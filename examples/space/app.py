"""A Hugging Face Space running the peft-adaptir demo (Space SDK: gradio; the Space runs ``python app.py``).

Offline by default: the embedded base model and the task adapters shipped with the package. To offer your own
adapters, set the Space variables ``ADAPTIR_BASE`` (a model id or folder) and ``ADAPTIR_ADAPTERS``
("derain=user/adaptir-derain, denoise=user/adaptir-denoise@v2"), or run locally:

    python examples/space/app.py
    ADAPTIR_ADAPTERS="derain=runs/derain/adapter" python examples/space/app.py
"""

from __future__ import annotations

import os

from peft_adaptir.cli.restore import parse_adapter_specs
from peft_adaptir.demo import build_app, load_engine

adapters = parse_adapter_specs([s.strip() for s in os.environ.get("ADAPTIR_ADAPTERS", "").split(",") if s.strip()])
demo = build_app(load_engine(os.environ.get("ADAPTIR_BASE") or None, adapters))

if __name__ == "__main__":
    demo.launch()  # Spaces set GRADIO_SERVER_NAME / GRADIO_SERVER_PORT themselves
