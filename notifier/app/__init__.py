"""The daemon's aiohttp application.

``state`` holds what the application keeps (typed ``AppKey``s), ``wiring`` makes the
application and runs its AWS clients and completion sources in ``cleanup_ctx``, ``routes``
declares each route with who may call it, ``middlewares`` turns errors into JSON and checks
API keys by those declarations, and ``handlers`` answers the HTTP API.
"""
