"""Benchmarks of DEL against its references (coturn, magic-wormhole, a plain socket).

Entry point: ``python -m bench all`` (see ``bench/__main__.py``); ``--quick`` is the smoke mode the
test suite runs. Results: BENCHMARKS.md and bench/out/*.json.
"""
