"""The conformance suite as pytest tests: the catalogue (test_catalogue.py) and the property tests."""
