"""Reading a JSON file a user wrote (schemas, keypoints), with one-line
errors that name the file."""

from __future__ import annotations

import json
from typing import Any

from hpe_jax import errors


def read(path: str, what: str,
         error: type[errors.ReportableError]) -> Any:
  """The parsed contents of `path`; `error` names it and what went wrong.

  Args:
    path: the file.
    what: what the file is, for the message (e.g. ``'schema file'``).
    error: the `errors.ReportableError` subclass to raise.
  """
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise error(f'{path}: cannot read {what} ({e.strerror})') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise error(f'{path}: not valid JSON ({e})') from None
