"""The conformance suite: test modules by area of SEMANTICS.md; the cases themselves live in catalogue.py."""
