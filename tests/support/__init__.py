"""Test support: free ports, coturn as an independent interop peer, TLS test certificates.

Nothing here is imported by ``src/``; these helpers only serve the test suite and benchmarks.
"""
