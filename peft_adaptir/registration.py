"""Registers AdaptIR with peft: a ``PeftType`` member plus peft's mapping tables. Safe to call any number of times.

peft 0.21 refuses to register a method whose name is not already a member of the ``PeftType`` enum, and has no plugin
discovery: a process must ``import peft_adaptir`` before it can load an AdaptIR adapter (otherwise peft raises
``KeyError: 'ADAPTIR'``).
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

PEFT_TYPE_NAME = "ADAPTIR"
PREFIX = "adaptir_"


def _add_peft_type_member() -> PeftType:
    """Add ``PeftType.ADAPTIR`` to peft's str Enum (member map, value map and name list), once."""
    existing = PeftType.__members__.get(PEFT_TYPE_NAME)
    if existing is not None:
        return existing
    member = str.__new__(PeftType, PEFT_TYPE_NAME)
    member._name_ = PEFT_TYPE_NAME
    member._value_ = PEFT_TYPE_NAME
    member.__objclass__ = PeftType
    PeftType._member_map_[PEFT_TYPE_NAME] = member
    PeftType._value2member_map_[PEFT_TYPE_NAME] = member
    PeftType._member_names_.append(PEFT_TYPE_NAME)
    type.__setattr__(PeftType, PEFT_TYPE_NAME, member)
    return member


ADAPTIR_PEFT_TYPE = _add_peft_type_member()


def register() -> None:
    """Make ``get_peft_model``, ``PeftConfig.from_pretrained`` and ``PeftModel.from_pretrained`` know AdaptIR."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    from .config import AdaptIRConfig
    from .model import AdaptIRModel

    if PEFT_TYPE_TO_TUNER_MAPPING.get(ADAPTIR_PEFT_TYPE) is AdaptIRModel:
        return
    register_peft_method(name=PEFT_TYPE_NAME.lower(), config_cls=AdaptIRConfig, model_cls=AdaptIRModel, prefix=PREFIX)
