"""Scripts that the fault tests run in a subprocess, so that a hang fails one test instead of the run."""
