"""Batch rendering: many jobs from a manifest, over local worker processes or Ray actors.

:func:`render_batch` reads jobs (a ``.jsonl`` / ``.csv`` manifest, or a list
of dicts), checks them all before any work, skips those already rendered
with the same inputs and options, and renders the rest on workers that keep
their loaded networks and template caches between jobs.

Modules, in import order (each imports only those before it):

- :mod:`.manifest`: reading and checking a manifest (:func:`read_jobs`,
  :class:`BatchJob`, the keys a job may have);
- :mod:`.resume`: digests, ``results.jsonl`` (:class:`JobResult`), what is
  already done, a dead worker's partial output;
- :mod:`.worker`: the job runner (an LRU of pipelines) and the local worker
  process;
- :mod:`.pools`: the :class:`~.pools.Pool` interface and the local process
  pool;
- :mod:`.ray`: the Ray pool, shipping inputs, connecting;
- :mod:`.schedule`: the scheduler that drives a pool;
- :mod:`.render`: :func:`render_batch`, :class:`BatchResult`, planning the cores.
"""

from __future__ import annotations

# Besides ``__all__``, the names that were importable from here before the
# split stay so (the redundant ``as`` aliases re-export them).
from .manifest import GENERATE_KEYS as GENERATE_KEYS
from .manifest import JOB_KEYS as JOB_KEYS
from .manifest import PATH_KEYS as PATH_KEYS
from .manifest import PIPELINE_KEYS as PIPELINE_KEYS
from .manifest import RESULTS_NAME, BatchJob, read_jobs
from .ray import SHIPPED_DIR as SHIPPED_DIR
from .render import BatchResult, render_batch
from .resume import JobResult
from .resume import job_digest as job_digest
from .worker import PIPELINES_PER_WORKER as PIPELINES_PER_WORKER
from .worker import TEST_CRASH_ENV as TEST_CRASH_ENV

__all__ = ["render_batch", "read_jobs", "BatchJob", "BatchResult", "JobResult", "RESULTS_NAME"]
