"""The ``edgepack`` command (and ``python -m edgepack``): signal handlers first, then the CLI's imports.

A SIGINT while numpy and the CLI are imported ends with one line and exit code 130, not a traceback;
SIGTERM with 143 (edgepack.interrupts). Only the interpreter's own start-up comes before the handlers.
"""

from __future__ import annotations

import sys

from edgepack import interrupts


def main() -> int:
    interrupts.install()
    try:
        from edgepack.cli import main as cli_main
    except KeyboardInterrupt as stop:
        print(f"edgepack: {interrupts.line(stop)}", file=sys.stderr)
        return interrupts.exit_code(stop)
    except ImportError:  # a signal inside a C extension's import (numpy turns it into an ImportError)
        signum = interrupts.received()
        if signum is None:
            raise
        print(f"edgepack: {interrupts.describe(signum)}", file=sys.stderr)
        return 128 + signum
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
