"""Exit statuses of every `lakd` command and of the sweep's jobs (one home; README "Exit status").

Launchers act on them: REQUEUE means "start the same command again" (Slurm requeues the job), USAGE and
DIVERGED are reported and never retried, FAILED is retried by the sweep's failure policy.
"""
OK = 0
FAILED = 1  # anything unexpected (a traceback), or a write that failed (e.g. disk full)
USAGE = 2  # bad input: one line naming the thing at fault; nothing was written
DIVERGED = 3  # the loss became NaN/inf; the last good checkpoint is kept
REQUEUE = 75  # os.EX_TEMPFAIL: preempted after saving a checkpoint; run again to resume
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): saved when it could; run again to resume
