"""``python -m examples.mfm_sentiment`` (or ``python examples/mfm_sentiment``) runs the CLI."""

import sys
from pathlib import Path

if not __package__:  # run as a path: put the repository root first, as ``-m`` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.mfm_sentiment.run import main

if __name__ == "__main__":
    main()
