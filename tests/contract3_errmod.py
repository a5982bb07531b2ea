"""An exception module that the test process can import but has not imported (test_contract3_errors)."""


class ParseFailure(ValueError):
    """A ValueError of a library the caller never imported itself."""
