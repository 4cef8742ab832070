"""The test application contract (shared/spec/testapp_wsgi.py) wrapped in
wsgiref.validate.validator, the standard library's PEP 3333 checker: any
breach by the server (a missing environ key, a wrong type, an iterable not
closed...) raises AssertionError, and any doubtful point warns. Warnings are
made errors here so that they fail the request, not just print.

Run with the spec folder importable: `rgun validated_app:app --chdir
tests/python --pythonpath ../shared/spec`.
"""
import warnings
from wsgiref.validate import WSGIWarning, validator

import testapp_wsgi

warnings.simplefilter("error", WSGIWarning)

app = validator(testapp_wsgi.app)
