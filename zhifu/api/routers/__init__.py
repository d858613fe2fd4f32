"""HTTP routers, one module per context (``health`` for operations).

Each module exposes ``router`` (an ``APIRouter``); :mod:`zhifu.api.app`
includes them in ``_include_routers``.
"""
