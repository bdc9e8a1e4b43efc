"""The detector registry: which class a rule's ``detector`` name builds. The detectors
themselves live in modules named for what they watch (``network``, ``volume``, ``refusals``,
``leaked_keys``, ``timing``, ``model_use``); what a detector is, in ``base``.
"""

from __future__ import annotations

from collections.abc import Callable

from garrison.detect import rules as r
from garrison.detect.base import Detector
from garrison.detect.leaked_keys import Canary, CertBinding
from garrison.detect.model_use import Content, Extraction
from garrison.detect.network import MultiNetwork, NewNetwork, OutOfNetwork
from garrison.detect.refusals import RefusalBurst, RefusalReason
from garrison.detect.timing import Dormant, OffHours, OutsideContract
from garrison.detect.volume import Volume

BUILDERS: dict[str, Callable[..., Detector]] = {
    "refusal_reason": RefusalReason,
    "cert_binding": CertBinding,
    "canary": Canary,
    "out_of_network": OutOfNetwork,
    "multi_network": MultiNetwork,
    "new_network": NewNetwork,
    "volume": Volume,
    "refusal_burst": RefusalBurst,
    "outside_contract": OutsideContract,
    "off_hours": OffHours,
    "dormant": Dormant,
    "content": Content,
    "extraction": Extraction,
}
assert set(BUILDERS) == set(r.DETECTORS)


def build(rule: r.Rule, *, last_used: dict[str, float] | None = None) -> Detector:
    if rule.detector == "dormant":
        return Dormant(rule, last_used)
    return BUILDERS[rule.detector](rule)
