"""Making manuscript repositories: ``livingreview new``, the Manubot migration, and ``upgrade``."""
