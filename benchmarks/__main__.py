"""``python -m benchmarks`` is ``latency-lab bench``."""

import sys

from service.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
