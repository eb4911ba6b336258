"""What a domain plugin builds on: the contract (:mod:`~omnidiff.plugins.contract`: the
``Domain`` protocol, ``LazyDomain``), the registry of installed domains
(:mod:`~omnidiff.plugins.registry`), data helpers (:mod:`~omnidiff.plugins.data`: loaders,
batch checks), feature-set metrics (:mod:`~omnidiff.plugins.metrics`), where a domain's configs
live (:mod:`~omnidiff.plugins.configs`) and the contract check every domain must pass
(:mod:`~omnidiff.plugins.check`)."""
