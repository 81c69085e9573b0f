"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training, MAD's finetuning objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mart_loss(clean_logits: Tensor, adv_logits: Tensor, y: Tensor, beta: float) -> Tensor:
    """``BCE(p_adv, y) + beta * mean_i KL(p_clean_i || p_adv_i) * (1 - p_clean_i[y_i])``.

    The boosted cross-entropy is the cross-entropy of the adversarial logits plus ``-log(1 - p_adv[k])`` for
    the most likely wrong class ``k``. The small constants keep the logarithms finite, as the MART and MAD
    public code do (``1.0001 - p`` and ``+ 1e-12`` inside the logs, ``1.0000001 - p_clean[y]`` as the weight).
    """
    p_adv = F.softmax(adv_logits, dim=1)
    p_clean = F.softmax(clean_logits, dim=1)
    top2 = p_adv.argsort(dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted = F.cross_entropy(adv_logits, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), wrong)
    kl = (torch.xlogy(p_clean, p_clean) - p_clean * torch.log(p_adv + 1e-12)).sum(dim=1)
    weight = 1.0000001 - p_clean.gather(1, y[:, None]).squeeze(1)
    return boosted + beta * (kl * weight).mean()
