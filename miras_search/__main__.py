"""``python -m miras_search`` = the ``miras`` command."""

from miras_search.cli import app

app()
