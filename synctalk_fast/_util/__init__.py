"""Private helpers of the package: atomic output files, progress and stage
timing, overlapped stages, and what the machine is (cores, memory, caches).
Nothing here is public API."""
