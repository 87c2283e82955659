"""``mmv serve LIB``: a search page for a library, in the browser, on this machine."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Serve a search page for a library made by 'mmv index': type a sentence, or drop a sound or an image; results are
cards with a picture of the moment, the file, the time range and the score; a click plays the video from that
moment. /?q=TEXT opens with that search (a search is a link), and GET /api/search?q=TEXT&k=K returns the JSON of
'mmv search --json'.

The server listens on 127.0.0.1 (this machine only) unless --host says otherwise; it serves only the files in the
library, and nothing it receives is written anywhere (a dropped query file is embedded and deleted)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="a search page for an indexed library (http://127.0.0.1:8000)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Example: mmv serve lib --port 8000   (then open http://127.0.0.1:8000)")
    p.add_argument("library", metavar="LIB", help="a library folder ('mmv index')")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; 0.0.0.0 exposes the library to the network)")
    p.add_argument("--model", default=None, help="the library's model, if it is not where the library says")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import mmv
    from mmv.search.query import Searcher
    from mmv.search.server import make_server

    model = mmv.load(args.model, map_location=args.device) if args.model else None
    searcher = Searcher(args.library, model=model, device=args.device)
    server = make_server(searcher, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.library} on http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
        searcher.close()
    return 0
