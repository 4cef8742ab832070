"""The test application contract (examples/testapp/testapp_wsgi.py) wrapped in
wsgiref.validate.validator, the standard library's PEP 3333 checker: any
breach by the server (a missing environ key, a wrong type, an iterable not
closed...) raises AssertionError, and any doubtful point warns. Warnings are
made errors here so that they fail the request, not just print.

Run with the test app's folder importable: `rgun validated_app:app --chdir
tests/python --pythonpath ../../examples/testapp`.
"""
import warnings
from wsgiref.validate import WSGIWarning, validator

import testapp_wsgi

warnings.simplefilter("error", WSGIWarning)

app = validator(testapp_wsgi.app)
