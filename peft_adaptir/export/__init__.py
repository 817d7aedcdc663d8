"""Export an adapted restorer: ONNX (dynamo exporter) and torch.export, with a DFT-free frequency branch.

``exporter`` (``export_model``), ``frequency`` (the frequency branch at a fixed size: FFT or matrix products),
``check`` (the exported file against PyTorch on a photo tile), ``graph`` (op counts, metadata), ``onnx_restorer``
(``restore_onnx``: tiled restoration on onnxruntime), ``dependencies`` (the optional onnx packages).
onnx, onnxscript and onnxruntime are imported only when used: ``pip install 'peft-adaptir[export]'``.
"""
