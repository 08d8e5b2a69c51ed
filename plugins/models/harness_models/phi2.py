"""``peft-phi2``: Microsoft Phi-2 (``model_type`` "phi"), LoRA through PEFT + TRL.

The reference study fine-tuned Phi-2 with plain PEFT LoRA (unsloth has no Phi-2 kernels).
This is :class:`~harness_models.peft_lora.PeftLoraAdapter` with Phi's module names as the
default LoRA targets — attention ``q_proj``/``k_proj``/``v_proj``/``dense`` and MLP
``fc1``/``fc2`` — and a check that the base model really is a Phi model. QLoRA-style
4-bit loading is the base adapter's ``load_in_4bit`` option (needs the ``qlora`` extra).
"""

from __future__ import annotations

from harness import hookimpl

from .peft_lora import PeftLoraAdapter

#: every attention and MLP projection of Phi-2
PHI_TARGETS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")


class PeftPhi2(PeftLoraAdapter):
    name = "peft-phi2"
    version = "1"
    description = "Phi-2 (model_type phi; reference: microsoft/phi-2); LoRA on q/k/v/dense/fc1/fc2 via PEFT + TRL"
    default_base_model = "microsoft/phi-2"
    default_targets = PHI_TARGETS
    model_types = ("phi",)


@hookimpl
def harness_register_models(register):
    register(PeftPhi2)
