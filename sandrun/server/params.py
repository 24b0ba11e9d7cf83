"""Path and query parameters shared by the routers, bounded as the stores can hold them.

Text never holds a NUL (PostgreSQL cannot store one; see spec/text.py) and integers stay
within PostgreSQL's `integer`, so a value the store could not take is a 422 naming the
parameter, never a store error.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from sandrun.spec.text import NO_NUL

INT32 = 2**31 - 1
JobId = Annotated[str, Path(pattern=NO_NUL)]
Text = Annotated[str, Path(pattern=NO_NUL)]  # any other text in a path (a file, a digest)
