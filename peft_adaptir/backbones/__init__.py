"""Base models to adapt: the embedded default, transformers models, spandrel checkpoints, the authors' release.

``default_base`` (the Swin2SR shipped in ``peft_adaptir/assets``), ``loading`` (``load_base_model(spec)``),
``size_multiple`` (the one rule for input sizes), ``safe_load`` (checkpoints without arbitrary pickles),
``spandrel_loader`` (``.pth`` files of SwinIR, HAT, IPT, NAFNet, ...), ``convert_release`` (the authors' adapters).
"""
