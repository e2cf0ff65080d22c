"""Parameter optimization without Ray: spaces, trial generation, batch evaluation, storage.

- :mod:`.space`: parsing and validating search spaces, deterministic trial keys;
- :mod:`.expr`: safe constraint expressions (``"fast < slow"``) parsed with ``ast``;
- :mod:`.sampling`: grid, random and TPE (Optuna ask/tell) trial sources;
- :mod:`.objective`: objectives and result constraints (``min_trades``);
- :mod:`.trials`: :func:`~.trials.run_trials`, the serial batch evaluator every Ray task calls;
- :mod:`.walkforward`: fold splitting, out-of-sample evaluation and equity stitching;
- :mod:`.store`: runs and trials in the database, resume and cancel requests;
- :mod:`.results`: the results table and the heatmap / parallel-coordinates plot.

The Ray fan-out lives in ``cryptoorchestrator.cluster.optimize``.
"""
