"""Side-by-side benchmarks of pydock against the OCI runtime floor and a real dockerd (issue 9)."""
