"""What several test files share: texts, assertions, tokenizer and checkpoint builders, and the
table of model families the parity suite runs over. Fixtures stay in conftest.py."""
