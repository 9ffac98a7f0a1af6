"""Real data for the lab, all offline: from pip packages or Debian data packages, never a hub.

One module per source (``fashion_mnist``, ``yeast``, ``sentiment``, ``corpora``, ...); import the loader
you need from its module.
"""
