"""HTTP interface: routers, auth dependencies, error mapping and OpenAPI.

Rules:
- ``api`` is the only package that imports FastAPI or Starlette. Domain
  contexts never import from ``api``; routers call a context's ``service``
  functions and translate the result to HTTP.
- Every error response is an RFC 9457 problem (``application/problem+json``)
  carrying ``instance`` (the request path) and ``request_id``; see
  :mod:`zhifu.api.problems`. A context maps its typed errors to problems with
  :func:`zhifu.api.problems.register_error_mapping`, so that the context itself
  stays free of HTTP.
- Every request has an id (``X-Request-ID``, taken from the client when it is
  well formed, otherwise made here), bound into the log context, returned on
  the response and written in the one access log line per request.
- Logs and metrics never see query strings, headers or bodies: they carry the
  route template, method, status and timing only.
- The API documentation (``/docs``) works with no network: it is a page of our
  own that renders ``/openapi.json`` with inline script and style.
"""
