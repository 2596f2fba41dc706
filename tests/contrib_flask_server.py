"""Serve the Flask example with werkzeug's threaded server in its own process.

``python contrib_flask_server.py`` builds ``create_app()`` from the environment
(FAL_KEY, FAL_BASE_URL, ...), binds 127.0.0.1 on a free port, prints
``falwrap-werkzeug-ready <port>`` and serves until terminated. Its own process,
so the web server's threads do not share a GIL with FakeFal's, whose arrival
stamps the tests measure.
"""

from __future__ import annotations

from contrib_helpers import add_example_paths
from werkzeug.serving import make_server

add_example_paths()

from demo_flask import create_app  # noqa: E402 - the example lives outside the package

if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    print(f"falwrap-werkzeug-ready {server.server_port}", flush=True)
    server.serve_forever()
