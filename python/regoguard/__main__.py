"""``python -m regoguard test|eval|check``: see ``regoguard._cli``."""

import sys

from regoguard._cli import main

if __name__ == "__main__":
    sys.exit(main())
