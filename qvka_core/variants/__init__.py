"""The variant registry and the built-in variants' specs. Torch-free: costing, `--help`, config
validation and the pages' lists import this package and no torch.

A variant is one package here: its `__init__.py` is the spec (formulas, options, conversion,
Home explainer; `register_variant(VariantSpec(...))`, torch-free) and its `attention.py` the
torch half (the `AttentionBase` subclass and, where it needs torch, its dense form and
conversion), which the spec names as "module:name" and the model imports only when it builds
one. To add a variant, write such a package and import it below: `vshared/` is the worked
example. The layering test keeps the spec halves free of torch.
"""

from qvka_core.variants.registry import (  # noqa: I001  (registry first: the specs use it)
    Conversion,
    Explainer,
    VariantOption,
    VariantSpec,
    available_variants,
    conversion_for,
    conversion_options,
    convertible_variants,
    demo_options,
    get_variant,
    register_variant,
    resolve,
    unregister_variant,
    variant_label,
    variant_options,
)
from qvka_core.variants import gqa, mla, keyless, vshared  # noqa: F401  (registration)

__all__ = [
    "Conversion",
    "Explainer",
    "VariantOption",
    "VariantSpec",
    "available_variants",
    "conversion_for",
    "conversion_options",
    "convertible_variants",
    "demo_options",
    "get_variant",
    "register_variant",
    "resolve",
    "unregister_variant",
    "variant_label",
    "variant_options",
]
