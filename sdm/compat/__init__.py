"""Every use of a library's private parts, one module per library.

Each module names the library versions it was written and tested for and why the public API
does not suffice; tests/sdm/compat/ has a test per override that fails when the library changes
underneath. Before raising a version bound in setup.py or constraints.txt, run those tests first.
"""
