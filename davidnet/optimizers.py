"""Optimizers of the airbench94_muon fast preset: Muon for conv filters, and Lookahead, in-graph.

Keller Jordan's airbench (arXiv 2404.00498) reaches 94% on CIFAR-10 in seconds
with, among other things, two optimizer ingredients. Each is a separate piece,
in its own module, so it can also be combined with the classic DavidNet
recipe; this module gathers them (``davidnet.optimizers.Muon`` and the rest
import from here as before):

* :mod:`davidnet.muon` - :func:`newton_schulz` and :class:`Muon`, momentum
  whose update is orthogonalised by a quintic Newton-Schulz iteration,
  applied to the conv FILTERS; :func:`muon_sgd`, Muon for the filters and
  Nesterov SGD for the rest as one optimizer; :func:`filters_and_rest`, the
  split.
* :mod:`davidnet.lookahead` - :class:`Lookahead`, airbench94's lookahead
  around any optimizer, inside the compiled train step, and
  :class:`AirbenchAlphaSchedule`, airbench's schedule for its ``alpha``.

Learning rates and weight decay: airbench94_muon in Keras
---------------------------------------------------------
airbench94_muon (batch 2000) sums its loss over the batch and uses PyTorch's
SGD (Nesterov, momentum 0.85) for everything but the filters, in three groups:
the whitening bias and the batch-norm biases at lr 0.053, the head at 0.67,
each with ``weight_decay = 2e-6 * 2000 / lr`` (so ``lr * weight_decay =
4e-3`` in every group), coupled: added to the gradient before the momentum.
Keras's losses are means over the batch, 1/2000 of the sum, so the same steps
are lr ``2000 * 0.053 = 106`` and ``2000 * 0.67 = 1340`` with coupled decay
``4e-3 / 106 = 3.774e-5`` and ``4e-3 / 1340 = 2.985e-6``: the product is
unchanged. :class:`davidnet.torch_optimizers.TorchSGD` is PyTorch's SGD
(coupled decay, the buffer of summed gradients that the current learning rate
scales), so these are exact, not an approximation. Muon (lr 0.24, momentum
0.6, no weight decay) needs no conversion: the orthogonalised update does not
depend on the scale of the gradient.
"""

from davidnet.lookahead import AirbenchAlphaSchedule, Lookahead
from davidnet.muon import NEWTON_SCHULZ_COEFFICIENTS, Muon, filters_and_rest, muon_sgd, newton_schulz

__all__ = [
    "NEWTON_SCHULZ_COEFFICIENTS",
    "newton_schulz",
    "Muon",
    "filters_and_rest",
    "muon_sgd",
    "AirbenchAlphaSchedule",
    "Lookahead",
]
