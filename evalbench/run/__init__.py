"""Plan (stages and identities), executors (ray, local), the worker's stage functions, the driver."""
