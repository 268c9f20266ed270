# A package, so that this directory's conftest.py is imported as
# "api.conftest" and does not replace tests/integration/conftest.py, which
# the other test modules import as "conftest".
