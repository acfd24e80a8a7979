"""The load generator (``python -m loadtest``): concurrent real-time streams against the server,
ramped in steps, compared with the raw engine's throughput on the same machine."""
