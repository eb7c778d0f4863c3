"""discoverd benchmarks: the ``bench/run.py`` driver, one module per benchmark, and their shared harness.

The harness is ``harness`` (logging, targets and verdicts, waiting with deadlines, percentiles, the event
loop, result records), ``procs`` (child processes stopped by PID, /proc readings), ``node_api`` (setup
calls against a node and the instances registered), ``load`` (wrk and pipelined HTTP load) and
``cluster`` (three peered nodes). ``bench/README.md`` lists every module and what each figure means.

Scripts in this folder run as files (``python bench/run.py``) or as modules (``python -m bench.run``);
a script run as a file puts the checkout on ``sys.path`` first, so ``bench.*`` imports work both ways.
"""
