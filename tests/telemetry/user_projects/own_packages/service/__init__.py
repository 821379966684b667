"""This project's own ``service`` package; the test puts its app (``plain/app.py``) in it."""
