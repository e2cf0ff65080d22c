"""Parameter optimization without Ray: spaces, trial generation, batch evaluation, storage.

- :mod:`.space`: parsing and validating search spaces, deterministic trial keys;
- :mod:`.expr`: safe constraint expressions (``"fast < slow"``) parsed with ``ast``;
- :mod:`.sampling`: grid, random and TPE (Optuna ask/tell) trial sources;
- :mod:`.objective`: objectives and result constraints (``min_trades``);
- :mod:`.trials`: :func:`~.trials.run_trials`, the serial batch evaluator every Ray task calls;
- :mod:`.study`: the validated, frozen study spec, its key and its run in the database;
- :mod:`.plan`: batch sizing (probes, timing a batch) and grouping neighbours together;
- :mod:`.executor`: the study driver against a submit / wait / cancel executor, and the serial
  executor;
- :mod:`.walkforward`: fold splitting, a study per fold, out-of-sample evaluation, stitching;
- :mod:`.optimizer`: the public ``optimize`` / ``open_study`` / ``walk_forward``, which build the
  spec and run it on a named executor (serial here, others injected);
- :mod:`.store`: runs and trials in the database, resume and cancel requests;
- :mod:`.results`: the result classes, the results table and the heatmap / parallel-coordinates
  plot.

The Ray executor lives in ``cryptoorchestrator.cluster.optimize``, which binds ``co.optimize`` and
``co.walk_forward`` to it.
"""
