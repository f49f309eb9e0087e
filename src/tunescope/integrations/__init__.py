"""Thin adapters that connect training frameworks to a tunescope `Run`.

Each adapter maps the framework's events and metric names to `Run.log` and applies the
decisions in `run.control` through the framework's public API; none holds logic of its own.
Modules import their framework on use: `tunescope.TrainerCallback` (transformers) loads
`integrations.transformers` lazily, so `import tunescope` stays light.
"""
