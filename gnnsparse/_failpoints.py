"""Fault injection for the crash-and-resume tests: named points where the process can kill itself.

Set the environment variable ``GNNSPARSE_FAILPOINT=name[:n]`` and the process sends itself
``SIGKILL`` (no cleanup, no ``finally`` blocks, no buffered writes flushed: what a power cut or the
OOM killer does) the ``n``-th time (default 1) it reaches ``failpoint("name")``. Unset or empty, a
failpoint costs one environment lookup.

Points placed in the code (see ``tests/test_checkpoint.py``):

* ``step-<phase>``: after an optimizer step (and the mask update of that step) of the training
  phase ``<phase>`` (``dense``, ``dense-prune``, ``finetune``, ``sparse``), before any checkpoint of
  that step is written;
* ``evaluate``: after an epoch's validation evaluation, before the model selection;
* ``prune``: inside :meth:`gnnsparse.regimes.MagnitudePruner.prune_to`, after the first layer's new
  mask is set and before the weights are masked;
* ``dst-update``: inside :meth:`gnnsparse.regimes.DynamicSparseTraining.after_step`, after the first
  layer's structure changed and before the update finished;
* ``checkpoint-write``: inside :func:`gnnsparse.checkpoint.atomic_save`, after half of the temporary
  file is written, before it is completed and renamed.

Data-parallel runs (``torchrun``, every rank sees the same environment): ``GNNSPARSE_FAILPOINT_RANK=r``
limits the failpoints to the process whose ``RANK`` is ``r``. ``GNNSPARSE_PERTURB=name[:n]`` makes
:func:`perturb_point` return True at its ``n``-th hit (the same rank scoping applies); the point
``mask-check`` (in :mod:`gnnsparse.train`, before each cross-rank mask check) then flips one stored
position of this rank's first sparse layer (or pruning mask), so the tests see the check fail.
``GNNSPARSE_FAILPOINT_SIGNAL=STOP`` makes a failpoint stop the process (``SIGSTOP``: a hung rank, which
its peers must give up on after their timeout) instead of killing it.
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint", "perturb_point", "ENV", "RANK_ENV", "PERTURB_ENV", "SIGNAL_ENV"]

#: The environment variable naming the failpoint to trigger.
ENV = "GNNSPARSE_FAILPOINT"
#: Only the process with this ``RANK`` (torchrun's) triggers failpoints and perturbations.
RANK_ENV = "GNNSPARSE_FAILPOINT_RANK"
#: The environment variable naming the perturbation point to trigger.
PERTURB_ENV = "GNNSPARSE_PERTURB"
#: ``KILL`` (default) or ``STOP``: the signal a failpoint sends its own process.
SIGNAL_ENV = "GNNSPARSE_FAILPOINT_SIGNAL"

_hits: dict[str, int] = {}
_perturb_hits: dict[str, int] = {}


def _this_rank() -> bool:
    want = os.environ.get(RANK_ENV, "").strip()
    return not want or want == os.environ.get("RANK", "0").strip()


def _parse(spec: str, env: str = ENV) -> tuple[str, int]:
    name, _, count = spec.strip().partition(":")
    try:
        n = int(count) if count else 1
    except ValueError:
        raise ValueError(f"{env}={spec!r}: the count after ':' must be an integer") from None
    if n < 1:
        raise ValueError(f"{env}={spec!r}: the count after ':' must be >= 1")
    return name, n


def failpoint(name: str) -> None:
    """Kill this process with ``SIGKILL`` (or stop it, ``GNNSPARSE_FAILPOINT_SIGNAL=STOP``) if ``GNNSPARSE_FAILPOINT`` names ``name`` and this is its
    ``n``-th hit; otherwise return at once.

    Raises:
        ValueError: ``GNNSPARSE_FAILPOINT`` is set to something that is not ``name`` or ``name:n``
            (n >= 1).
    """
    spec = os.environ.get(ENV)
    if not spec or not _this_rank():
        return
    target, n = _parse(spec)
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == n:
        sig = os.environ.get(SIGNAL_ENV, "KILL").strip().upper() or "KILL"
        if sig not in ("KILL", "STOP"):
            raise ValueError(f"{SIGNAL_ENV}={sig!r} must be KILL or STOP")
        os.kill(os.getpid(), signal.SIGKILL if sig == "KILL" else signal.SIGSTOP)


def perturb_point(name: str) -> bool:
    """True if ``GNNSPARSE_PERTURB`` names ``name`` and this is its ``n``-th hit (on the rank of
    ``GNNSPARSE_FAILPOINT_RANK``, if set); the caller then corrupts its own state on purpose (tests).

    Raises:
        ValueError: ``GNNSPARSE_PERTURB`` is not ``name`` or ``name:n`` (n >= 1).
    """
    spec = os.environ.get(PERTURB_ENV)
    if not spec or not _this_rank():
        return False
    target, n = _parse(spec, PERTURB_ENV)
    if target != name:
        return False
    _perturb_hits[name] = _perturb_hits.get(name, 0) + 1
    return _perturb_hits[name] == n
