"""Names shared by the tuner, its saved files and the peft registration. Imports nothing of this package.

The peft type member itself (``PeftType.ADAPTIR``) is added by ``peft_adaptir.peft_patches`` at import; code that needs
the member looks it up by ``PEFT_TYPE_NAME`` at run time.
"""

from __future__ import annotations

from peft.utils import SAFETENSORS_WEIGHTS_NAME

PEFT_TYPE_NAME = "ADAPTIR"
# prefix of every AdaptIR attribute on a tuner layer, as peft requires of a method's parameters
PREFIX = "adaptir_"
# the ModuleDict on each layer that holds one AdaptIR branch per adapter name
BRANCH_CONTAINER = "adaptir_branch"
# the per-adapter output multipliers on each layer
SCALE_CONTAINER = "adaptir_scale"
# in `adapter_names`, a sample that runs through the base model only
BASE_ADAPTER_NAME = "__base__"
# the weights file peft writes in an adapter folder
ADAPTER_WEIGHTS_FILE = SAFETENSORS_WEIGHTS_NAME
