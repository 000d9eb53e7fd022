"""The one exception type the core raises for anything the user can cause."""

from __future__ import annotations

import os
from typing import Optional, Union


class MedsamError(Exception):
    """A problem with a user's file, folder, checkpoint or request.

    The message always names the file (when there is one) and says what is wrong, so the GUI
    can show it as it is and the CLI can print it without a traceback.
    """

    def __init__(self, problem: str, path: Optional[Union[str, os.PathLike]] = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
