"""Applications of the library, kept apart from it: the offline demo (`scope-trl demo`), the tiny offline test bed the
tests and the demo train on (`toy`), and the miniature benchmark suite (`miniatures`, run by
`benchmarks/miniatures.py`). Nothing in the trainers imports them."""
