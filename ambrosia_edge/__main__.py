"""``python -m ambrosia_edge`` behaves like the ``ambrosia-edge`` console script.

Useful where the script directory is not on PATH (``pip install --user``) and to pick the
interpreter explicitly, as with ``python3.11 -m ambrosia_edge run ...``.
"""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
