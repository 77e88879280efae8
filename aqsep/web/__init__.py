"""`aqsep serve`: a local web page to pick a query by ear and by eye and hear the result.

Needs the ``web`` extra (``pip install aqsep[web]``: FastAPI and uvicorn). The page and its
scripts are files of this package (``static/``); nothing is fetched from elsewhere.
"""

from __future__ import annotations

from aqsep.web.server import create_app

__all__ = ["create_app"]
