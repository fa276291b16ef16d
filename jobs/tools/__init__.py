"""Tools around the jobs: `ffs apply`, the consistency check, the traffic generator."""
