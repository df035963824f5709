"""``feedctl``: the admin command line over feedd's HTTP API; maps outcomes to exit statuses.

0 ok, 1 the server refused, 2 usage error, 3 cannot connect; one line on stderr, no traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from feedd.ctl.client import EXIT_REFUSED, Client, CtlError
from feedd.ctl.parser import build_parser

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # argparse prints usage and exits with status 2 on its own.
    args = parser.parse_args(argv)
    client = Client(args.url, args.token, args.timeout)
    try:
        args.run(client, args)
    except CtlError as exc:
        print(f"feedctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyError, TypeError, AttributeError) as exc:
        # A renderer met an answer of another shape than docs/API.md describes.
        print(
            f"feedctl: unexpected answer from the server ({type(exc).__name__}: {exc}); "
            "--json shows it as sent",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("feedctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (feedctl ohlcv ... | head): stop quietly, and keep Python's
        # final flush from complaining about the same closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
