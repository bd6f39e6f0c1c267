"""HTTP pieces every route shares: the ASGI request, response and route types, and
Idempotency-Key handling. The lanes' routes and the console build on them, and
`service.api` composes those routes into the app, so this package imports neither."""
