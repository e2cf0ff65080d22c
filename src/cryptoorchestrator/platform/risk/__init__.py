"""Portfolio risk: limits, the approval of every order, breach detection (no Ray here).

The ``RiskActor`` in ``cluster`` is a thin shell around :class:`RiskManager`.
"""
