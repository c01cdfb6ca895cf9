"""The fault-tolerance guide's working example: a slow constructor, and a PID as the answer.

The 10 s sleep makes a replica's start visible (a restarted replica is not RUNNING at once); the PID
in every response tells which process served it.
"""

import os
import time

from ray import serve


@serve.deployment
class SleepyPid:
    def __init__(self):
        time.sleep(10)

    def __call__(self) -> int:
        return os.getpid()


app = SleepyPid.bind()
