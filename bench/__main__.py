"""``python -m bench``: run the registered benchmark cases side by side."""

from bench.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
