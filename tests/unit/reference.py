"""Independent high-precision references (mpmath, 50 digits), written from the definitions, not the code."""

import mpmath

mpmath.mp.dps = 50


def bernoulli_log_offset(logit: float, eta: float) -> float:
    p = 1 / (1 + mpmath.exp(-mpmath.mpf(logit)))
    return float(mpmath.log(1 - p + p * mpmath.exp(1 / mpmath.mpf(eta))))


def histogram_log_offset(logits: list[float], atoms: list[float], eta: float) -> float:
    weights = [mpmath.exp(mpmath.mpf(x)) for x in logits]
    total = sum(weights)
    return float(mpmath.log(sum(w / total * mpmath.exp(mpmath.mpf(a) / eta) for w, a in zip(weights, atoms))))


def kl(guided: list[float], ref: list[float]) -> float:
    """KL(softmax(guided) ‖ softmax(ref)); -inf logits have probability 0."""
    pg = [mpmath.exp(mpmath.mpf(x)) if x != float("-inf") else mpmath.mpf(0) for x in guided]
    pr = [mpmath.exp(mpmath.mpf(x)) if x != float("-inf") else mpmath.mpf(0) for x in ref]
    zg, zr = sum(pg), sum(pr)
    return float(sum(g / zg * mpmath.log((g / zg) / (r / zr)) for g, r in zip(pg, pr) if g > 0))


def bce(logit: float, y: float) -> float:
    p = 1 / (1 + mpmath.exp(-mpmath.mpf(logit)))
    return float(-(y * mpmath.log(p) + (1 - y) * mpmath.log(1 - p)))
