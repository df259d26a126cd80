"""One module per system compared by ``benchmarks/compare.py``; see benchmarks/README.md."""
